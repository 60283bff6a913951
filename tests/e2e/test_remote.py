"""The registry tier between hosts: real sessions, a real registry (Debian's docker-registry) on loopback.

A "host" is a cache directory: two hosts are two local stores, one registry
behind both.  Builds run with COMPOSECACHE_STRICT=1 (a fallback fails the test)
except where the registry's failure is the point; then exactly one warning line
is the promise.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.faultkit import Lab, summary, warnings
from tests.e2e.registry_faults import closed_port, fault_proxy

sys.path.insert(0, str(harness.REPO / "scripts"))
import registrylib

FIXTURE = "stack"
SERVICES = {"api", "worker", "web", "docs"}
STRICT = {"COMPOSECACHE_STRICT": "1"}
FAIL_OPEN = {"COMPOSECACHE_STRICT": ""}
NO_HANG_S = 120  # a build with a hung registry must end well within this (probe deadline 5 s)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[registrylib.Registry]:
    with registrylib.started(tmp_path / "registry") as reg:
        yield reg


def _remote(host: str) -> dict[str, str]:
    return {"COMPOSECACHE_REMOTE": f"{host}/buildcache", "COMPOSECACHE_SCOPE_PREFIX": "shop",
            "COMPOSECACHE_REMOTE_WAIT": "120"}  # fmt: skip


def _build(lab: Lab, session: harness.Session, host: Path, remote: str, *args: str, **env: str) -> harness.Result:
    return lab.cc(session, "-p", f"p{session.name[-2:]}", "build", *args, cwd=lab.project(FIXTURE), cache_dir=host,
                  env={**_remote(remote), **env})  # fmt: skip


def _tags(reg: registrylib.Registry) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://{reg.host}/v2/buildcache/tags/list", timeout=5) as response:
            return sorted(json.loads(response.read()).get("tags") or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def _scopes(lab: Lab, session: harness.Session, host: Path) -> set[str]:
    stats = json.loads(lab.cache(session, "stats", "--json", cache_dir=host).stdout)
    return {scope["name"] for scope in stats["scopes"]}


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_two_hosts_share_through_the_registry(
    lab: Lab, sessions: harness.Sessions, registry: registrylib.Registry, leg: str
) -> None:
    lab.project(FIXTURE)
    host1, host2 = lab.tmp / "host1", lab.tmp / "host2"
    cold = _build(lab, sessions.start(leg), host1, registry.host, **STRICT)
    assert cold.returncode == 0, cold.report
    assert all("cold" in line and line.endswith("; exported") for line in summary(cold).values()), cold.stderr
    assert "pushed 4 scope(s)" in cold.stderr, cold.stderr
    assert len(_tags(registry)) == 4

    fresh = _build(lab, sessions.start(leg), host2, registry.host, **STRICT)
    assert fresh.returncode == 0, fresh.report
    harness.assert_all_run_steps_cached(fresh.output, at_least=5)
    lines = summary(fresh)
    assert set(lines) == SERVICES
    assert all("import from registry shop/" in line and line.endswith("; exported") for line in lines.values()), lines
    assert _scopes(lab, sessions.started[-1], host2) == {f"shop/{name}" for name in SERVICES}

    registrylib.stop(registry)  # host 2 holds the scopes now: a third session needs no registry
    third = _build(lab, sessions.start(leg), host2, registry.host, **FAIL_OPEN)
    assert third.returncode == 0, third.report
    harness.assert_all_run_steps_cached(third.output, at_least=5)
    assert all(line.startswith(f"scope shop/{name}: import from shop/{name};")
               for name, line in summary(third).items()), third.stderr  # fmt: skip
    found = warnings(third)
    assert len(found) == 1 and "registry" in found[0] and "local cache only" in found[0], third.stderr


def test_docker_build_through_the_registry(lab: Lab, sessions: harness.Sessions,
                                           registry: registrylib.Registry) -> None:  # fmt: skip
    context = lab.project(FIXTURE) / "web"
    env = {**_remote(registry.host), **STRICT, "COMPOSECACHE_SCOPE_PREFIX": ""}
    args = ("docker", "build", "--network", "none", "-t", "web:cc", ".")
    host1, host2 = sessions.start(), sessions.start()
    cold = lab.cc(host1, *args, cwd=context, cache_dir=lab.tmp / "h1", env=env)
    assert cold.returncode == 0 and "pushed 1 scope(s)" in cold.stderr, cold.output
    warm = lab.cc(host2, *args, cwd=context, cache_dir=lab.tmp / "h2", env=env)
    assert warm.returncode == 0, warm.report
    assert "import from registry" in warm.stderr, warm.stderr
    # BuildKit sometimes shows a RUN step served from a registry cache as the download of its layers
    # (the image export fetches them lazily) instead of `CACHED`.  The image's layers are what proves
    # the step did not run again: a second run writes new mtimes, so a new diffID.
    assert _layers(host2, "web:cc") == _layers(host1, "web:cc"), warm.output


def _layers(session: harness.Session, image: str) -> list[str]:
    shown = harness.docker(session, "image", "inspect", "--format", "{{json .RootFS.Layers}}", image)
    layers = json.loads(shown.stdout)
    assert isinstance(layers, list) and len(layers) >= 2, shown.stdout
    return [str(layer) for layer in layers]


def test_read_only_never_pushes(lab: Lab, sessions: harness.Sessions, registry: registrylib.Registry) -> None:
    lab.project(FIXTURE)
    writer = _build(lab, sessions.start(), lab.tmp / "rw", registry.host, **STRICT)
    assert writer.returncode == 0 and "pushed 4 scope(s)" in writer.stderr, writer.output
    manifests = {tag: _digest_of(registry, tag) for tag in _tags(registry)}
    reader_host = lab.tmp / "ro"
    reader_host.mkdir()  # a read-only host's (empty) store
    result = lab.cc(sessions.start(), "--read-only", "-p", "ro", "build", cwd=lab.project(FIXTURE),
                    cache_dir=reader_host, env={**_remote(registry.host), **STRICT})  # fmt: skip
    assert result.returncode == 0, result.report
    harness.assert_all_run_steps_cached(result.output, at_least=5)
    assert all("import from registry" in line and "not exported (read-only)" in line
               for line in summary(result).values()), result.stderr  # fmt: skip
    assert "pushed" not in result.stderr
    assert {tag: _digest_of(registry, tag) for tag in _tags(registry)} == manifests


def _digest_of(reg: registrylib.Registry, tag: str) -> str:
    request = urllib.request.Request(f"http://{reg.host}/v2/buildcache/manifests/{tag}", method="HEAD",
                                     headers={"Accept": "application/vnd.oci.image.index.v1+json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.headers["Docker-Content-Digest"])


@pytest.mark.parametrize("leg", ["stable", "latest"])
@pytest.mark.parametrize("fault", ["stopped", "hang", "500", "garbage", "blobs500"])
def test_a_broken_registry_gives_one_line_and_a_build(
    lab: Lab, sessions: harness.Sessions, registry: registrylib.Registry, fault: str, leg: str
) -> None:
    lab.project(FIXTURE)
    if fault == "blobs500":  # the registry holds the cache, but fails every layer download in the build
        seeded = _build(lab, sessions.start(leg), lab.tmp / "seed", registry.host, **STRICT)
        assert seeded.returncode == 0, seeded.report
    session = sessions.start(leg)
    if fault == "stopped":
        target = f"127.0.0.1:{closed_port()}"
        proxy = None
    else:
        proxy = fault_proxy(fault, registry.host)
        target = proxy.__enter__()
    try:
        started = time.monotonic()
        result = _build(lab, session, lab.tmp / "empty", target, **FAIL_OPEN)
        took = time.monotonic() - started
    finally:
        if proxy is not None:
            proxy.__exit__(None, None, None)
    assert result.returncode == 0, result.report
    assert took < NO_HANG_S, took
    found = warnings(result)
    assert len(found) == 1 and "registry" in found[0], result.stderr
    if fault == "blobs500":
        # The look passes; BuildKit then fails the build on a layer it cannot fetch (measured), and
        # composecache runs it once more without the registry.
        assert "a build that imported from it failed; building again without the registry" in found[0]
    assert set(summary(result)) == SERVICES
    assert all(line.endswith("; exported") for line in summary(result).values()), result.stderr


def _login(session: harness.Session, host: str, user: str, password: str) -> None:
    config = Path(session.env()["DOCKER_CONFIG"]) / "config.json"
    current = json.loads(config.read_text()) if config.exists() else {}
    current.update(registrylib.docker_config_auth(host, user, password))
    config.write_text(json.dumps(current))


def _tree_holds(root: Path, needles: list[bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {needle!r}" for needle in needles if needle in data]
    return found


@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_credentials_from_the_docker_config(lab: Lab, sessions: harness.Sessions, tmp_path: Path, leg: str) -> None:
    password = "s3cret-Pa55-" + base64.b32encode(tmp_path.name.encode()).decode()[:8]
    with registrylib.started(tmp_path / "authreg", user="builder", password=password) as reg:
        lab.project(FIXTURE)
        host1, host2, host3 = lab.tmp / "a1", lab.tmp / "a2", lab.tmp / "a3"
        writer = sessions.start(leg)
        _login(writer, reg.host, "builder", password)
        cold = _build(lab, writer, host1, reg.host, **STRICT)
        assert cold.returncode == 0 and "pushed 4 scope(s)" in cold.stderr, cold.output
        reader = sessions.start(leg)
        _login(reader, reg.host, "builder", password)
        warm = _build(lab, reader, host2, reg.host, **STRICT)
        assert warm.returncode == 0, warm.report
        harness.assert_all_run_steps_cached(warm.output, at_least=5)

        wrong = "wrong-" + password
        stranger = sessions.start(leg)
        _login(stranger, reg.host, "builder", wrong)
        result = _build(lab, stranger, host3, reg.host, **FAIL_OPEN)
    assert result.returncode == 0, result.report
    found = warnings(result)
    assert len(found) == 1 and "401" in found[0], result.stderr
    assert all("cold" in line for line in summary(result).values()), result.stderr
    needles = [password.encode(), wrong.encode(), base64.b64encode(f"builder:{wrong}".encode()),
               base64.b64encode(f"builder:{password}".encode())]  # fmt: skip
    for output in (cold.output, warm.output, result.output):
        assert not [n for n in needles if n in output.encode()], "a credential reached the output"
    assert not [f for host in (host1, host2, host3) for f in _tree_holds(host, needles)]


def test_three_sessions_two_hosts_concurrently(lab: Lab, sessions: harness.Sessions,
                                               registry: registrylib.Registry) -> None:  # fmt: skip
    lab.project(FIXTURE)
    host1, host2 = lab.tmp / "c1", lab.tmp / "c2"
    runs = [(sessions.start(), host1), (sessions.start(), host1), (sessions.start(), host2)]
    results: dict[int, harness.Result] = {}

    def build(index: int, session: harness.Session, host: Path) -> None:
        results[index] = _build(lab, session, host, registry.host, **STRICT)

    for _round in range(2):
        threads = [threading.Thread(target=build, args=(i, s, h)) for i, (s, h) in enumerate(runs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in results.values():
            assert result.returncode == 0, result.report
            assert set(summary(result)) == SERVICES, result.stderr
    for host in (host1, host2):
        lab.assert_sound(runs[0][0], cache_dir=host)
    assert len(_tags(registry)) == 4
    newcomer = _build(lab, sessions.start(), lab.tmp / "c3", registry.host, **STRICT)
    assert newcomer.returncode == 0, newcomer.report
    harness.assert_all_run_steps_cached(newcomer.output, at_least=5)


def test_doctor_and_stats_show_the_remote(lab: Lab, shared: harness.Session, registry: registrylib.Registry) -> None:
    env = _remote(registry.host)
    doctor = lab.cc(shared, "doctor", cwd=lab.tmp, env=env)
    assert f"ok   remote {registry.host}/buildcache (plain HTTP): read-write" in doctor.stdout, doctor.output
    stats = json.loads(lab.cache(shared, "stats", "--json", env=env).stdout)
    assert stats["remote"]["name"] == f"{registry.host}/buildcache" and stats["remote"]["plain_http"]
    registrylib.stop(registry)
    read_only = registrylib.start(registry.workdir, port=registry.port, readonly=True)
    try:
        doctor = lab.cc(shared, "doctor", cwd=lab.tmp, env=env)
        assert "FIX  remote" in doctor.stdout and "read-only" in doctor.stdout, doctor.output
    finally:
        registrylib.stop(read_only)
    doctor = lab.cc(shared, "doctor", cwd=lab.tmp, env=env)
    assert "unreachable" in doctor.stdout, doctor.output
    bad = lab.cc(shared, "--remote", "not a remote", "build", cwd=lab.tmp)
    assert bad.returncode == 2 and "Traceback" not in bad.output, bad.output


def test_registry_script_starts_and_stops_by_pid(tmp_path: Path) -> None:
    env = {**os.environ, "COMPOSECACHE_REGISTRY_ROOT": str(tmp_path)}
    script = str(harness.REPO / "scripts" / "registry")
    subprocess.run([script, "start", "r1"], env=env, check=True, capture_output=True, timeout=60)
    reg = registrylib.load(tmp_path / "r1")
    assert registrylib.running(reg) and registrylib.answers(reg.port)
    out = subprocess.run([script, "env", "r1"], env=env, check=True, capture_output=True, text=True).stdout
    assert f"COMPOSECACHE_REMOTE={reg.host}/buildcache" in out
    subprocess.run([script, "stop", "r1", "--purge"], env=env, check=True, capture_output=True, timeout=60)
    assert not registrylib.running(reg) and not (tmp_path / "r1").exists()


def test_registry_gc_window(lab: Lab, sessions: harness.Sessions, registry: registrylib.Registry) -> None:
    """The operator's gc: registry read-only (builds import, push nothing, one line), gc, then as before."""
    lab.project(FIXTURE)
    for index in range(2):  # two hosts: the second one's push leaves the first one's manifests untagged
        first = _build(lab, sessions.start(), lab.tmp / f"g{index}", registry.host, **STRICT)
        assert first.returncode == 0 and "pushed 4 scope(s)" in first.stderr, first.output
    registrylib.stop(registry)
    read_only = registrylib.start(registry.workdir, port=registry.port, readonly=True)
    try:
        during = _build(lab, sessions.start(), lab.tmp / "during", registry.host, **FAIL_OPEN)
        assert during.returncode == 0, during.report
        harness.assert_all_run_steps_cached(during.output, at_least=5)
        found = warnings(during)
        assert len(found) == 1 and "not pushed" in found[0], during.stderr
        config = str(registry.workdir / "config.yml")
        gc = subprocess.run([str(registrylib.REGISTRY_BIN), "garbage-collect", "--delete-untagged", config],
                            check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert gc.returncode == 0, gc.stderr
    finally:
        registrylib.stop(read_only)
    after = registrylib.start(registry.workdir, port=registry.port)
    try:
        fresh = _build(lab, sessions.start(), lab.tmp / "after", registry.host, **STRICT)
        assert fresh.returncode == 0, fresh.report
        harness.assert_all_run_steps_cached(fresh.output, at_least=5)
    finally:
        registrylib.stop(after)


def test_classic_image_store_imports_from_the_registry(lab: Lab, sessions: harness.Sessions,
                                                       registry: registrylib.Registry) -> None:  # fmt: skip
    """The docker driver with the classic store cannot export a cache: it imports, pushes nothing, and says so."""
    lab.project(FIXTURE)
    cold = _build(lab, sessions.start(), lab.tmp / "k1", registry.host, **STRICT)
    assert cold.returncode == 0, cold.report
    tags = _tags(registry)
    classic = _build(lab, sessions.start(classic_store=True), lab.tmp / "k2", registry.host, **STRICT)
    assert classic.returncode == 0, classic.report
    harness.assert_all_run_steps_cached(classic.output, at_least=5)
    lines = summary(classic)
    assert all("import from registry" in line and "not exported" in line for line in lines.values()), lines
    assert "pushed" not in classic.stderr and _tags(registry) == tags
    doctor = lab.cc(sessions.started[-1], "doctor", cwd=lab.tmp, env=_remote(registry.host))
    assert "classic image store imports from the registry but exports nothing" in doctor.stdout, doctor.output
