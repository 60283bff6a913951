"""Issue 6, attack suite: sharing cache layers never lets one session reach another's files.

One test per row of the attack table (docs/security.md has the threat model and
says which test shows what):

- hostile names wherever a name reaches a path: nothing is created outside the cache root;
- symlinks planted inside the root: refused, nothing written outside;
- git remote credentials never appear in a path, a log line or a file composecache writes;
- `RUN --mount=type=secret` contents never reach an exported blob (every layer decompressed);
- nothing composecache creates is world-writable, even under umask 000;
- read-only consumers import but cannot change the store;
- namespaces share no writable state and never import each other's cache;
- a token copied into a builder stage DOES reach the store under mode=max, not under mode=min.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from composecache.store.naming import is_safe_dirname
from tests.e2e import harness
from tests.e2e.faultkit import (
    SCOPE,
    Lab,
    changed,
    copy_store,
    layer_descriptors,
    manifest_of,
    namespace_roots,
    read_only_bind,
    scope_dirs,
    store_root,
    summary,
    tree_state,
    warnings,
)

# Attacks: these tests check the fail-open path itself (one warning, then a normal build).
pytestmark = pytest.mark.fail_open

PLAIN = ("--progress", "plain")


def _git(project: Path, *args: str) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(project), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "-C", str(project), *args], env=env, check=True, capture_output=True)


def _all_names_and_bytes(root: Path) -> Iterator[tuple[str, bytes]]:
    """Every path under root (as text) with the content of regular files (links: their target)."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            yield str(path), os.readlink(path).encode()
        elif path.is_file():
            yield str(path), path.read_bytes()
        else:
            yield str(path), b""


def _outside_state(tmp: Path, *inside: Path) -> dict[str, tuple[object, ...]]:
    """tree_state of the test's whole temporary directory, except what may change (`inside`)."""
    state = tree_state(tmp)
    skip = [str(p.relative_to(tmp)) for p in inside]
    return {k: v for k, v in state.items() if k != "." and not any(k == s or k.startswith(s + "/") for s in skip)}


# --- hostile names -----------------------------------------------------------------------------------

HOSTILE_COMPOSE = """\
services:
  "..":
    image: hostile-dotdot-RUN:local
    build: {context: ./app, network: none}
    network_mode: none
  ".":
    image: hostile-dot-RUN:local
    build: {context: ./app, network: none}
    network_mode: none
  "-x":
    build: {context: ./app, network: none}
    network_mode: none
  "--print":
    build: {context: ./app, network: none}
    network_mode: none
  traversal:
    build: {context: ./app, network: none}
    network_mode: none
    x-composecache: {scope: "../../../../../../OUTSIDE/escaped"}
  absolute:
    build: {context: ./app, network: none}
    network_mode: none
    x-composecache: {scope: "ABSOLUTE/escaped"}
  controls:
    build: {context: ./app, network: none}
    network_mode: none
    x-composecache: {scope: "a\\x1b]0;pwned\\x07b\\nc\\r\\x1b[2Jd\\u202etxt.exe"}
  long:
    build: {context: ./app, network: none}
    network_mode: none
    x-composecache: {scope: "LONG"}
"""


@pytest.mark.parametrize("strategy", ["override", "bake"])
def test_hostile_names_never_reach_outside_the_cache_root(strategy: str, lab: Lab, shared: harness.Session) -> None:
    outside = lab.tmp / "OUTSIDE"
    absolute = Path(f"/tmp/composecache-hostile-{secrets.token_hex(6)}")
    lab.cache_dir = lab.tmp / "deep" / "er" / "cache"
    project = lab.project()
    compose = HOSTILE_COMPOSE.replace("OUTSIDE", outside.name).replace("ABSOLUTE", str(absolute))
    compose = compose.replace("LONG", "../" * 16 + "x" * 150)  # the schema allows 200 characters

    def project_for_run(run: str) -> list[str]:
        # Image names of their own per run: re-tagging an image whose layers another build is
        # unpacking races in containerd (moby/buildkit#6521), and nothing here is about tags.
        (project / "compose.yaml").write_text(compose.replace("RUN", run))
        return ["-p", f"h{run}"]

    project_for_run("0")
    _git(project, "init", "-q", "-b", "main")
    _git(project, "remote", "add", "origin", f"https://example.com/org/../../../{outside.name}/escape.git")
    # a branch name git allows, with shell syntax in it: every scope gets `@<branch>`
    _git(project, "symbolic-ref", "HEAD", "refs/heads/$(touch${IFS}pwned);x/%2e%2e/y")
    may_change = (lab.tmp / "deep", lab.tmpdir, project / "compose.yaml")  # the cache, TMPDIR, our own edits
    before = _outside_state(lab.tmp, *may_change)
    env = {"COMPOSECACHE_SCOPE_PREFIX": f"../../../../{outside.name}/prefix", "COMPOSECACHE_NAMESPACE": "../../ns/.."}

    plain = lab.plain(shared, *project_for_run("plain"), "build")
    assert plain.returncode == 0, plain.report
    for run, extra in enumerate(({}, env)):  # scopes from the git remote and branch, then the prefix and namespace
        wrapped = lab.cc(shared, "--strategy", strategy, *project_for_run(f"{strategy}{run}"), "build", env=extra)
        assert wrapped.returncode == plain.returncode, wrapped.output
        assert warnings(wrapped) == [], wrapped.stderr
        exported = [line for line in summary(wrapped).values() if line.endswith("; exported")]
        assert len(exported) == 8, wrapped.stderr
        ours = "\n".join(line for line in wrapped.stderr.splitlines() if line.startswith("composecache:"))
        assert "\\x1b]0;pwned" in ours and not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", ours), ours
    # the same with `docker build -t <hostile tag>`: docker refuses the tag, composecache changes nothing
    for tag in ("a/../../../x", f"localhost:5000/../{outside.name}:1", "x" * 300):
        plain_tag = harness.docker(shared, "build", "--network", "none", "-t", tag, str(project / "app"), check=False)
        wrapped_tag = lab.cc(shared, "docker", "build", "--network", "none", "-t", tag, str(project / "app"), env=env)
        assert wrapped_tag.returncode == plain_tag.returncode, wrapped_tag.output
    ls = lab.cache(shared, "ls", env=env)
    assert ls.returncode == 0, ls.report

    assert _outside_state(lab.tmp, *may_change) == before, "something was written outside"
    assert not outside.exists() and not absolute.exists() and not (project / "pwned").exists()
    for root in namespace_roots(lab.cache_dir):
        assert is_safe_dirname(root.name), root
        for area in ("scopes", "staging", "quarantine"):
            assert all(is_safe_dirname(p.name) for p in (root / area).iterdir()), list((root / area).iterdir())
    for path in lab.cache_dir.rglob("*"):  # every link is one of ours
        assert not path.is_symlink() or os.readlink(path) == "../../blobs", path
    # what a terminal shows of names other sessions chose: no control characters
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", ls.stdout), ls.stdout


# --- planted symlinks ----------------------------------------------------------------------------------

PLANTS = {
    # where the link is planted -> what it points at (in the outside directory)
    "scope-dir": "scope",
    "scope-blobs-link": "blobs",
    "scope-index": "index.json",
    "scope-record": "victim.txt",
    "blob-file": "victim.txt",
    "blobs-dir": "blobs",
    "staging-dir": "empty",
    "store-lock": "not-there-yet",
    "quarantine-dir": "empty",
    "namespace-dir": "namespace",
}


def _plant(cache_dir: Path, outside: Path, kind: str) -> Path:
    """Replace one entry of the store by a symlink into `outside`; returns the link."""
    root = store_root(cache_dir)
    scope_dir = scope_dirs(cache_dir)[0]
    where = {
        "scope-dir": scope_dir,
        "scope-blobs-link": scope_dir / "blobs",
        "scope-index": scope_dir / "index.json",
        "scope-record": scope_dir / "scope.json",
        "blobs-dir": root / "blobs",
        "staging-dir": root / "staging",
        "store-lock": root / "locks" / "store.lock",
        "quarantine-dir": root / "quarantine",
        "namespace-dir": root,
    }
    if kind == "blob-file":
        _, manifest = manifest_of(scope_dir)
        largest = max(layer_descriptors(manifest), key=lambda d: d["size"])
        link = root / "blobs" / "sha256" / str(largest["digest"]).split(":")[1]
    else:
        link = where[kind]
    target = outside / PLANTS[kind]
    if kind in {"scope-dir", "namespace-dir"}:  # an attractive copy of the real thing, outside
        shutil.copytree(link, target, symlinks=True)
    if kind == "blobs-dir":
        shutil.copytree(link, target)
    if kind == "scope-index":
        shutil.copy2(link, target)
    if kind == "scope-blobs-link":
        shutil.copytree(root / "blobs", target)
    shutil.rmtree(link) if link.is_dir() and not link.is_symlink() else link.unlink()
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("kind", list(PLANTS))
def test_planted_symlinks_are_refused_and_nothing_is_written_outside(
    kind: str, lab: Lab, shared: harness.Session, template: Path
) -> None:
    outside = lab.tmp / "outside"
    outside.mkdir()
    (outside / "empty").mkdir()
    (outside / "victim.txt").write_text("a file another session must never see changed\n")
    copy_store(template, lab.cache_dir)
    link = _plant(lab.cache_dir, outside, kind)
    before = tree_state(outside)

    result = lab.cc(shared, "-p", f"pl-{kind}", "build", "app")  # a project (an image name) of its own
    assert result.returncode == 0, result.report  # never a failed build
    # refused, and said so once (a planted scope.json is never read through, just replaced: no warning)
    assert len(warnings(result)) == (0 if kind == "scope-record" else 1), result.stderr
    gc = lab.cache(shared, "gc", "--grace", "0")
    verify = lab.cache(shared, "verify", "--deep")
    again = lab.cache(shared, "verify", "--deep")

    assert changed(before, tree_state(outside)) == [], "written through a planted link"
    assert not (outside / "not-there-yet").exists()
    if kind in {"blobs-dir", "staging-dir", "store-lock", "quarantine-dir", "namespace-dir"}:
        # the layout itself is unsafe: the whole store is refused until someone looks at it
        assert "unsafe cache layout" in warnings(result)[0], result.stderr
        assert gc.returncode == verify.returncode == 1 and "unsafe cache layout" in verify.stderr
        assert link.is_symlink(), "left for an operator to inspect"
    else:
        # one entry is unsafe: it is quarantined (the link itself, never its target) and replaced
        assert summary(result)["app"].endswith("; exported"), result.stderr
        assert gc.returncode == 0, gc.report
        assert again.returncode == 0, again.report
        assert not link.is_symlink() or os.readlink(link) == "../../blobs", "ours again"


# --- credentials in a git remote ------------------------------------------------------------------------


def test_git_remote_credentials_never_appear_anywhere(lab: Lab, shared: harness.Session) -> None:
    token = f"s3cr3t-{secrets.token_hex(8)}"
    user = f"deploy-{secrets.token_hex(4)}"
    project = lab.project()
    _git(project, "init", "-q", "-b", "main")
    _git(project, "remote", "add", "origin", f"https://{user}:{token}@git.example.com/org/shop.git")
    _git(project, "remote", "add", "mirror", f"ssh://{user}:{token}@mirror.example.com:2222/org/shop.git")
    _git(project, "symbolic-ref", "HEAD", "refs/heads/feature/x")
    outputs = [
        lab.cc(shared, "-v", "-p", "cred1", "build", "app"),
        lab.cc(shared, "-v", "--strategy", "bake", "-p", "cred2", "build", "app"),
        lab.cc(shared, "-v", "docker", "build", "--network", "none", "-t", "shop", str(project / "app")),
        lab.cc(shared, "--dry-run", "-p", "cred", "build"),
        lab.cache(shared, "ls"),
        lab.cache(shared, "stats", "--json"),
        lab.cache(shared, "verify", "--json"),
        lab.cache(shared, "gc", "--json"),
    ]
    assert all(result.returncode == 0 for result in outputs), [r.output for r in outputs]
    assert "git.example.com/org/shop/app@feature/x" in outputs[0].stderr, outputs[0].stderr
    for result in outputs:
        assert token not in result.output and user not in result.output, result.output
    for name, data in [*_all_names_and_bytes(lab.cache_dir), *_all_names_and_bytes(lab.tmpdir)]:
        assert token not in name and user not in name, name
        assert token.encode() not in data and user.encode() not in data, name


# --- secrets and intermediate stages ----------------------------------------------------------------------


def _blob_texts(cache_dir: Path) -> Iterator[tuple[str, bytes]]:
    """Every blob of every namespace, raw and decompressed (gzip, zstd; tar is searched as is)."""
    for root in namespace_roots(cache_dir):
        for blob in sorted((root / "blobs" / "sha256").iterdir()):
            data = blob.read_bytes()
            yield blob.name, data
            if data[:2] == b"\x1f\x8b":
                yield blob.name + " (gunzip)", gzip.decompress(data)
            elif data[:4] == b"\x28\xb5\x2f\xfd":
                out = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout
                yield blob.name + " (unzstd)", out


@pytest.fixture(scope="module", params=["stable", "latest"])
def secrets_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  rootfs_tar: Path) -> Iterator[tuple[Lab, dict[str, str], harness.Result]]:  # fmt: skip
    """fixtures/secrets built once per leg with fresh tokens: (lab, tokens, composecache's result)."""
    leg = str(request.param)
    base = tmp_path_factory.mktemp(f"secrets-{leg}")
    lab = Lab(base, rootfs_tar, base / "cache")
    project = lab.project("secrets")
    tokens = {name: f"{name}-{secrets.token_hex(12)}" for name in ("stage_max", "stage_min", "build_secret", "arg")}
    (project / "max" / "stage-token.txt").write_text(tokens["stage_max"] + "\n")
    (project / "min" / "stage-token.txt").write_text(tokens["stage_min"] + "\n")
    (project / "build-secret.txt").write_text(tokens["build_secret"] + "\n")
    with harness.sessions(f"s{os.getpid() % 100000}{leg[:3]}-") as group:
        result = lab.cc(group.start(leg), "-p", "sec", "build", cwd=project, ARG_TOKEN=tokens["arg"])
        yield lab, tokens, result


def test_secret_mount_contents_never_reach_an_exported_blob(
    secrets_build: tuple[Lab, dict[str, str], harness.Result],
) -> None:
    lab, tokens, result = secrets_build
    assert result.returncode == 0, result.report
    lines = summary(result)
    assert lines["maxed"].endswith("; exported") and lines["minned"].endswith("; exported"), result.stderr
    searched = 0
    for name, data in _blob_texts(lab.cache_dir):
        searched += 1
        assert tokens["build_secret"].encode() not in data, f"the build secret is in blob {name}"
    assert searched >= 6
    assert tokens["build_secret"] not in result.output


def test_build_arg_values_are_not_in_the_store_in_plain_text(
    secrets_build: tuple[Lab, dict[str, str], harness.Result],
) -> None:
    """What docs/security.md says of build args: only digests of the steps (a different value misses)."""
    lab, tokens, result = secrets_build
    assert result.returncode == 0, result.report
    assert [name for name, data in _blob_texts(lab.cache_dir) if tokens["arg"].encode() in data] == []


def test_builder_stage_files_reach_the_store_under_mode_max_only(
    secrets_build: tuple[Lab, dict[str, str], harness.Result],
) -> None:
    lab, tokens, result = secrets_build
    assert result.returncode == 0, result.report
    found = {key: [name for name, data in _blob_texts(lab.cache_dir) if tokens[key].encode() in data]
             for key in ("stage_max", "stage_min")}  # fmt: skip
    assert found["stage_max"], "mode=max exports the builder stage: its token is in the shared store"
    assert found["stage_min"] == [], "mode=min exports the final image's layers only"


# --- modes ------------------------------------------------------------------------------------------------


def _world_writable(root: Path) -> list[str]:
    """Entries any local user could write: world-writable, under directories others may enter."""
    found = []
    for directory, dirs, files in os.walk(root):  # entries may vanish while a build runs
        for name in [".", *dirs, *files]:
            try:
                info = os.lstat(os.path.join(directory, name))
            except FileNotFoundError:
                continue
            if not stat.S_ISLNK(info.st_mode) and info.st_mode & stat.S_IWOTH:
                found.append(f"{oct(stat.S_IMODE(info.st_mode))} {directory}/{name}")
        for name in list(dirs):  # what is inside a directory others cannot enter is out of their reach
            with contextlib.suppress(FileNotFoundError):
                if not os.lstat(os.path.join(directory, name)).st_mode & stat.S_IXOTH:
                    dirs.remove(name)
    return found


def test_nothing_composecache_creates_is_world_writable(lab: Lab, shared: harness.Session) -> None:
    """umask 000, and a store with something to quarantine: every entry, and the staging of a live build."""
    env = shared.env()
    env.update(lab.env(), BUILDKIT_PROGRESS="plain")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "composecache", *args], env=env, cwd=lab.project(),
                              capture_output=True, text=True, preexec_fn=lambda: os.umask(0), check=False)  # fmt: skip

    assert run("-p", "ww", "build", "app").returncode == 0
    index = scope_dirs(lab.cache_dir)[0] / "index.json"
    index.write_text("not json")
    assert run("cache", "verify").returncode == 1  # quarantines, under umask 000 too
    assert list((store_root(lab.cache_dir) / "quarantine").iterdir())
    assert _world_writable(lab.cache_dir) == []
    proc = subprocess.Popen([sys.executable, "-m", "composecache", "-p", "ww2", "--profile", "slow", "build", "slow"],
                            env=env, cwd=lab.project(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: os.umask(0))  # fmt: skip
    seen_live: list[str] = []
    looked_at_live_staging = False
    try:
        while proc.poll() is None:
            looked_at_live_staging |= any((store_root(lab.cache_dir) / "staging").glob("*/ingest"))
            seen_live += [p for p in _world_writable(lab.cache_dir) if "/staging/" in p]
            time.sleep(0.05)
    finally:
        proc.wait()
    assert proc.returncode == 0 and looked_at_live_staging
    assert run("cache", "gc", "--grace", "0").returncode == 0
    assert seen_live == []
    assert _world_writable(lab.cache_dir) == []

    # an operator's chmod 777 on the cache directory: composecache says what that allows
    os.chmod(lab.cache_dir, 0o777)
    result = lab.cc(shared, "-p", "ww3", "build", "app")
    assert result.returncode == 0
    assert [w for w in warnings(result) if "world-writable" in w], result.stderr


# --- read-only consumers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["--read-only", "COMPOSECACHE_READ_ONLY=1", "read-only-mount"])
def test_read_only_consumers_import_but_cannot_change_the_store(
    how: str, lab: Lab, sessions: harness.Sessions, template: Path
) -> None:
    copy_store(template, lab.cache_dir)
    (lab.tmp / "ro").mkdir()
    before = tree_state(lab.cache_dir)
    session = sessions.start()
    flags = ["--read-only"] if how == "--read-only" else []
    env = {"COMPOSECACHE_READ_ONLY": "1"} if how.startswith("COMPOSECACHE") else {}

    def consume() -> list[harness.Result]:
        return [
            lab.cc(session, *flags, "-p", "ro", *PLAIN, "build", "app", env=env),
            lab.cc(
                session, *flags, "docker", "build", "--network", "none", "-t", "ro", str(lab.project() / "app"), env=env
            ),
            lab.cc(session, *flags, "cache", "gc", "--grace", "0", cwd=lab.tmp, env=env),
            lab.cc(session, *flags, "cache", "prune", SCOPE, cwd=lab.tmp, env=env),
            lab.cc(session, *flags, "cache", "verify", "--deep", cwd=lab.tmp, env=env),
        ]

    if how == "read-only-mount":
        with read_only_bind(lab.cache_dir):
            build, docker_build, gc, prune, verify = consume()
    else:
        build, docker_build, gc, prune, verify = consume()
    assert build.returncode == 0, build.report
    harness.assert_all_run_steps_cached(build.output, at_least=2)
    assert summary(build)["app"].startswith(f"scope {SCOPE}: import from {SCOPE}; not exported")
    assert docker_build.returncode == 0, docker_build.report
    assert verify.returncode == 0, verify.report
    if how == "read-only-mount":  # gc finds nothing to do on a sound store... and could not do it anyway
        assert gc.returncode in {0, 1} and prune.returncode == 1, (gc.output, prune.output)
    else:
        assert gc.returncode == 1 and "read-only" in gc.stderr, gc.output
        assert prune.returncode == 1 and "read-only" in prune.stderr, prune.output
    assert changed(before, tree_state(lab.cache_dir)) == []


# --- namespaces ------------------------------------------------------------------------------------------------


def test_namespaces_share_no_writable_state_and_never_import_each_other(lab: Lab, sessions: harness.Sessions) -> None:
    a = lab.cc(sessions.start(), "-p", "a", *PLAIN, "build", "app", COMPOSECACHE_NAMESPACE="team-a")
    assert summary(a)["app"] == f"scope {SCOPE}: cold (nothing to import); exported", a.stderr
    (a_root,) = namespace_roots(lab.cache_dir)
    a_before = tree_state(a_root)
    # Shared by all namespaces: the layout marker (written once) and ns/ (a new namespace is an entry).
    base_before = {k: v for k, v in tree_state(lab.cache_dir).items() if not k.startswith("ns")}

    b = lab.cc(sessions.start(), "-p", "b", *PLAIN, "build", "app", COMPOSECACHE_NAMESPACE="team-b")
    assert summary(b)["app"] == f"scope {SCOPE}: cold (nothing to import); exported", b.stderr
    assert not any(harness.run_steps(b.output).values()), "team-b imported nothing"
    assert changed(a_before, tree_state(a_root)) == [], "team-b's build changed nothing of team-a's"
    assert {k: v for k, v in tree_state(lab.cache_dir).items() if not k.startswith("ns")} == base_before
    b_root = next(r for r in namespace_roots(lab.cache_dir) if r != a_root)
    for root in (a_root, b_root):  # each holds its own copy of a layer both built: no link between them
        for path in root.rglob("*"):
            assert not path.is_symlink() or os.readlink(path) == "../../blobs", path
            assert path.is_symlink() or path.stat().st_nlink == 1 or path.is_dir(), f"hard link: {path}"

    again = lab.cc(sessions.start(), "-p", "a2", *PLAIN, "build", "app", COMPOSECACHE_NAMESPACE="team-a")
    harness.assert_all_run_steps_cached(again.output, at_least=2)
    assert (
        json.loads(lab.cache(sessions.started[0], "stats", "--json", env={"COMPOSECACHE_NAMESPACE": "team-b"}).stdout)[
            "scopes"
        ][0]["name"]
        == SCOPE
    )
