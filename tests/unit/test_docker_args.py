"""`docker build` / `buildx build` argument parsing, scopes and the rewritten command (no daemon)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, cast

import pytest

from composecache import cached_build, runner
from composecache.cached_build import CacheRequest, CacheSlot
from composecache.docker import build as docker_build
from composecache.docker import cmdline as docker_args
from composecache.docker import compose_v1
from composecache.docker import scope as docker_scope
from composecache.docker.cmdline import BUILDX_BUILD, COMPOSE, OTHER, PLAIN_BUILD
from composecache.output import Output
from composecache.session import toolchain
from composecache.session.toolchain import Builder
from composecache.settings import Settings


@pytest.mark.parametrize(
    ("args", "kind", "rest", "global_args"),
    [
        (["build", "-t", "x", "."], PLAIN_BUILD, ["-t", "x", "."], []),
        (["builder", "build", "."], PLAIN_BUILD, ["."], []),
        (["image", "build", "."], PLAIN_BUILD, ["."], []),
        (["buildx", "build", "."], BUILDX_BUILD, ["."], []),
        (["buildx", "b", "."], BUILDX_BUILD, ["."], []),
        (["buildx", "--builder", "bk", "build", "."], BUILDX_BUILD, ["."], []),
        (["buildx", "--builder=bk", "-D", "build", "."], BUILDX_BUILD, ["."], []),
        (["-H", "unix:///s", "build", "."], PLAIN_BUILD, ["."], ["-H", "unix:///s"]),
        (["--host=unix:///s", "-D", "build", "."], PLAIN_BUILD, ["."], ["--host=unix:///s", "-D"]),
        (
            ["-c", "ctx", "--config", "/cfg", "buildx", "build", "."],
            BUILDX_BUILD,
            ["."],
            ["-c", "ctx", "--config", "/cfg"],
        ),
        (["-l", "debug", "--tlsverify", "compose", "up"], COMPOSE, ["up"], ["-l", "debug", "--tlsverify"]),
        (["-Hunix:///s", "compose", "-p", "x", "build"], COMPOSE, ["-p", "x", "build"], ["-Hunix:///s"]),
        (["--context", "build", "ps"], OTHER, ["ps"], ["--context", "build"]),  # a context named "build"
        (["run", "--rm", "img", "build"], OTHER, ["run", "--rm", "img", "build"], []),
        (["buildx", "ls"], OTHER, ["buildx", "ls"], []),
        (["buildx", "bake"], OTHER, ["buildx", "bake"], []),
        (["image", "ls"], OTHER, ["image", "ls"], []),
        (["-v"], OTHER, [], ["-v"]),
        ([], OTHER, [], []),
    ],
)
def test_classify_finds_the_command_after_global_options(
    args: list[str], kind: str, rest: list[str], global_args: list[str]
) -> None:
    command = docker_args.classify(args)
    assert command.kind == kind
    assert command.rest == rest
    assert command.global_args == global_args


def test_buildx_builder_option_is_remembered() -> None:
    assert docker_args.classify(["buildx", "--builder", "bk", "build", "."]).buildx_builder == "bk"
    assert docker_args.classify(["buildx", "--builder=bk", "b", "."]).buildx_builder == "bk"


def test_parse_build_reads_flags_with_and_without_values() -> None:
    build = docker_args.parse_build([
        "--network", "none", "-t", "reg.example:5000/org/app:1", "--tag=second", "-fdocker/Dockerfile",
        "--build-arg", "A=1", "--no-cache", "--target=dev", "--cache-from", "type=registry,ref=x",
        "--pull", "--iidfile", "/tmp/id", "--platform", "linux/amd64", "ctx",
    ])  # fmt: skip
    assert build.context == "ctx"
    assert build.tags == ["reg.example:5000/org/app:1", "second"]
    assert build.dockerfile == "docker/Dockerfile"
    assert build.target == "dev"
    assert build.iidfile == "/tmp/id"
    assert not build.has_output
    assert not build.quiet


@pytest.mark.parametrize(
    ("args", "tags", "quiet"),
    [
        (["-qt", "x", "."], ["x"], True),
        (["-qtx", "."], ["x"], True),
        (["-t=x", "."], ["x"], False),
        (["--quiet=false", "-t", "x", "."], ["x"], False),
    ],
)
def test_combined_short_flags(args: list[str], tags: list[str], quiet: bool) -> None:
    build = docker_args.parse_build(args)
    assert (build.tags, build.quiet, build.context) == (tags, quiet, ".")


@pytest.mark.parametrize(
    ("args", "has_output"),
    [
        (["--load", "."], True),
        (["--push", "."], True),
        (["-o", "type=tar,dest=x.tar", "."], True),
        (["--output=type=docker", "."], True),
        (["--load=false", "."], False),
        (["."], False),
    ],
)
def test_outputs(args: list[str], has_output: bool) -> None:
    assert docker_args.parse_build(args).has_output is has_output


def test_legacy_flags_with_values_do_not_hide_the_context() -> None:
    build = docker_args.parse_build(["-m", "1g", "--memory-swap", "2g", "-c", "512", "--cpuset-cpus", "0",
                                     "--security-opt", "x", "--isolation", "default", "--force-rm", "--rm",
                                     "--ulimit", "nofile=1024", "--shm-size", "64m", "."])  # fmt: skip
    assert build.context == "."


@pytest.mark.parametrize("context", ["-", "https://github.com/org/repo.git#main:sub", "git@github.com:o/r.git"])
def test_context_may_be_stdin_or_a_url(context: str) -> None:
    assert docker_args.parse_build(["-t", "x", context]).context == context


def test_double_dash_ends_the_flags() -> None:
    assert docker_args.parse_build(["-t", "x", "--", "-weird-dir"]).context == "-weird-dir"


@pytest.mark.parametrize("args", [[], [".", "extra"], ["--some-new-flag", "value", "."]])
def test_anything_but_one_context_is_refused(args: list[str]) -> None:
    with pytest.raises(docker_args.BuildArgsError):
        docker_args.parse_build(args)


def test_help_and_call_are_recognised() -> None:
    assert docker_args.parse_build(["--help"]).help
    assert docker_args.parse_build(["-h"]).help
    assert docker_args.parse_build(["--check", "."]).call == "check"
    assert docker_args.parse_build(["--call=outline", "."]).call == "outline"
    assert docker_args.parse_build(["--print", "targets", "."]).call == "targets"


@pytest.mark.parametrize(
    ("tag", "repository"),
    [
        ("x", "x"),
        ("app:1.2", "app"),
        ("org/app", "org/app"),
        ("org/app:latest", "org/app"),
        ("registry.example.com/org/app:1", "org/app"),
        ("localhost:5000/app:dev", "app"),
        ("localhost/app", "app"),
        ("docker.io/library/busybox:1", "busybox"),
        ("library/busybox", "busybox"),
        ("Registry/app", "app"),
        ("app@sha256:" + "a" * 64, "app"),
        ("reg:5000/a/b/c:t@sha256:" + "b" * 64, "a/b/c"),
    ],
)
def test_image_repository_drops_registry_tag_and_digest(tag: str, repository: str) -> None:
    assert docker_args.image_repository(tag) == repository


@pytest.mark.parametrize(
    ("global_args", "changes"),
    [
        ([], {}),
        (["-H", "unix:///s"], {"DOCKER_HOST": "unix:///s"}),
        (["--host=tcp://h:2376", "--tlsverify"], {"DOCKER_HOST": "tcp://h:2376", "DOCKER_TLS_VERIFY": "1"}),
        (["-Hunix:///s"], {"DOCKER_HOST": "unix:///s"}),
        (["--context", "remote"], {"DOCKER_CONTEXT": "remote", "DOCKER_HOST": None}),
        (["-c=remote"], {"DOCKER_CONTEXT": "remote", "DOCKER_HOST": None}),
        (["--config", "/cfg"], {"DOCKER_CONFIG": "/cfg"}),
        (["-D"], None),
        (["-l", "debug"], None),
        (["--tls"], None),
        (["--tlscacert", "/ca.pem"], None),
        (["--tlsverify=false"], None),
        (["-H", "unix:///a", "-H", "unix:///b"], None),
    ],
)
def test_global_options_as_environment(global_args: list[str], changes: dict[str, str | None] | None) -> None:
    assert docker_args.global_options_env(global_args) == changes


@pytest.mark.parametrize(
    ("global_args", "config"),
    [([], None), (["--config", "/a"], "/a"), (["--config=/a"], "/a"), (["-D", "--config", "/a"], "/a"),
     (["--config", "/a", "--config", "/b"], "/b"), (["--tlscacert", "--config", "-D"], None), (["--config"], "")],
)  # fmt: skip
def test_one_global_option_beside_any_others(global_args: list[str], config: str | None) -> None:
    assert docker_args.global_option(global_args, "--config") == config


def test_apply_env_sets_and_removes() -> None:
    env = {"DOCKER_HOST": "unix:///old", "KEEP": "1"}
    assert docker_args.apply_env(env, {"DOCKER_HOST": None, "DOCKER_CONTEXT": "c"}) == {
        "KEEP": "1",
        "DOCKER_CONTEXT": "c",
    }


# --- scopes -----------------------------------------------------------------------------------------


def _plain_dir(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(parents=True)
    return path


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}


def test_scope_is_context_identity_and_image_repository(tmp_path: Path) -> None:
    context = _plain_dir(tmp_path, "myapp")
    build = docker_args.parse_build(["-t", "registry.example/team/api:dev", "-t", "other", str(context)])
    request = docker_scope.request_for(build, _env(), None, cwd=tmp_path)
    assert request == CacheRequest("registry.example/team/api:dev", "myapp/team/api", ("myapp/team/api",), "max")


def test_scope_without_tag_is_the_dockerfile_path_within_the_context(tmp_path: Path) -> None:
    context = _plain_dir(tmp_path, "proj")
    (context / "docker").mkdir()
    build = docker_args.parse_build(["-f", "proj/docker/api.Dockerfile", "proj"])
    assert docker_scope.request_for(build, _env(), None, cwd=tmp_path).export_scope == "proj/docker/api.Dockerfile"
    build = docker_args.parse_build(["proj"])
    assert docker_scope.request_for(build, _env(), None, cwd=tmp_path).export_scope == "proj/Dockerfile"
    build = docker_args.parse_build(["-f", "-", "proj"])
    assert docker_scope.request_for(build, _env(), None, cwd=tmp_path).export_scope == "proj/stdin"


def test_scope_of_stdin_and_url_contexts(tmp_path: Path) -> None:
    cwd = _plain_dir(tmp_path, "here")
    build = docker_args.parse_build(["-"])
    assert docker_scope.request_for(build, _env(), None, cwd=cwd).export_scope == "here/stdin"
    build = docker_args.parse_build(["-t", "x", "https://user:tok@github.com/Org/Repo.git#main:sub"])
    assert docker_scope.request_for(build, _env(), None, cwd=cwd).export_scope == "github.com/org/repo/x"


def test_scope_prefix_replaces_the_identity(tmp_path: Path) -> None:
    context = _plain_dir(tmp_path, "ctx")
    build = docker_args.parse_build(["-t", "app", str(context)])
    assert docker_scope.request_for(build, _env(), "team", cwd=tmp_path).export_scope == "team/app"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                   env={**_env(), "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_SYSTEM": "/dev/null"})  # fmt: skip


def test_branch_exports_to_its_own_scope_and_imports_the_base_too(tmp_path: Path) -> None:
    repo = _plain_dir(tmp_path, "checkout")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "remote", "add", "origin", "https://github.com/org/repo.git")
    _git(repo, "checkout", "-q", "-b", "feature")
    build = docker_args.parse_build(["-t", "api", str(repo)])
    request = docker_scope.request_for(build, _env(), None, cwd=tmp_path)
    assert request.export_scope == "github.com/org/repo/api@feature"
    assert request.import_scopes == ("github.com/org/repo/api@feature", "github.com/org/repo/api")


# --- Compose v1 ------------------------------------------------------------------------------------


def test_compose_v1_tag_maps_to_the_service(tmp_path: Path) -> None:
    assert compose_v1.service_from_tag("sess1_api", ["sess1"]) == "api"
    assert compose_v1.service_from_tag("my_proj_web_ui", ["my", "my_proj"]) == "web_ui"
    assert compose_v1.service_from_tag("other_api", ["sess1"]) is None
    assert compose_v1.normalize_project("_My.Project-1") == "myproject-1"


def test_compose_v1_build_is_recognised_by_its_iidfile_and_tag() -> None:
    v1 = docker_args.parse_build(["--network", "none", "--tag", "proj_api", "--iidfile", "/tmp/tmpab", "/src"])
    assert compose_v1.looks_like_v1_build(v1)
    assert not compose_v1.looks_like_v1_build(docker_args.parse_build(["--tag", "proj_api", "/src"]))
    assert not compose_v1.looks_like_v1_build(docker_args.parse_build(["--tag", "org/app:1", "--iidfile", "f", "."]))


def test_compose_v1_project_candidates(tmp_path: Path) -> None:
    project = _plain_dir(tmp_path, "Work Dir")
    (project / ".env").write_text("# comment\nCOMPOSE_PROJECT_NAME='FromDotEnv'\n")
    names = compose_v1.project_candidates(["-p", "Sess-1", "--verbose", "build"], {"COMPOSE_PROJECT_NAME": "envp"},
                                          project)  # fmt: skip
    assert names[:3] == ["sess-1", "envp", "fromdotenv"]
    assert "workdir" in names
    names = compose_v1.project_candidates(["--project-name=abc", "-f", str(project / "dc.yml")], {}, tmp_path)
    assert names[0] == "abc"


def test_compose_v1_parent_process_is_found(tmp_path: Path) -> None:
    """A process named docker-compose starts us: its arguments are read from /proc."""
    script = "from composecache.docker import compose_v1; print(compose_v1.parent_compose_args())"
    starter = tmp_path / "starter.py"
    starter.write_text(f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {script!r}])\n")
    result = subprocess.run([sys.executable, str(starter)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "None"  # a python parent is not Compose v1
    runner = tmp_path / "docker-compose-1"
    runner.write_text(f"#!{sys.executable}\nimport subprocess, sys\nsubprocess.run([sys.executable, '-c', "
                      f"{script!r}])\n")  # fmt: skip
    runner.chmod(0o755)
    result = subprocess.run([str(runner), "-p", "x", "build"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['-p', 'x', 'build']"


def test_compose_v1_service_becomes_the_scope_item(tmp_path: Path) -> None:
    context = _plain_dir(tmp_path, "src")
    build = docker_args.parse_build(["--tag", "sessa_api", "--iidfile", "/tmp/x", str(context)])
    request = docker_scope.request_for(build, _env(), None, cwd=tmp_path, compose_v1_service="api")
    assert request.export_scope == "src/api"


# --- the build path -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind_args", "env", "buildx", "expected"),
    [
        (["build", "."], {}, True, None),
        (["build", "."], {"DOCKER_BUILDKIT": "1"}, True, None),
        (["build", "."], {"DOCKER_BUILDKIT": "0"}, True, "DOCKER_BUILDKIT=0"),
        (["build", "."], {"DOCKER_BUILDKIT": "false"}, True, "DOCKER_BUILDKIT=0"),
        (["build", "."], {"DOCKER_BUILDKIT": "maybe"}, True, ""),
        (["build", "."], {}, False, "buildx is not installed"),
        (["buildx", "build", "."], {"DOCKER_BUILDKIT": "0"}, True, None),
        (["buildx", "build", "."], {}, False, ""),
    ],
)
def test_legacy_builder_notice(kind_args: list[str], env: dict[str, str], buildx: bool, expected: str | None) -> None:
    notice = docker_build.legacy_builder_notice(docker_args.classify(kind_args), env, buildx)
    if expected is None or expected == "":
        assert notice == expected
    else:
        assert notice is not None
        assert notice.startswith(expected)
        assert "\n" not in notice


def _slot(cache_from: list[str], cache_to: str | None) -> CacheSlot:
    return CacheSlot(CacheRequest("x", "s", ("s",)), cache_from=cache_from, cache_to=cache_to)


def test_rewritten_argv_turns_plain_build_into_buildx_and_keeps_user_flags() -> None:
    command = docker_args.classify(["-H", "unix:///s", "image", "build", "--cache-from", "mine", "-t", "x", "."])
    argv = docker_build.rewritten_argv(Path("/usr/bin/docker"), command,
                                       _slot(["type=local,src=/c/a,digest=sha256:1"], "type=local,dest=/c/st"),
                                       load=True)  # fmt: skip
    assert argv == ["/usr/bin/docker", "-H", "unix:///s", "buildx", "build",
                    "--cache-from", "type=local,src=/c/a,digest=sha256:1", "--cache-to", "type=local,dest=/c/st",
                    "--load", "--cache-from", "mine", "-t", "x", "."]  # fmt: skip


def test_rewritten_argv_keeps_buildx_options() -> None:
    command = docker_args.classify(["buildx", "--builder", "bk", "b", "."])
    argv = docker_build.rewritten_argv(Path("docker"), command, _slot([], None), load=False)
    assert argv == ["docker", "buildx", "--builder", "bk", "b", "."]


class _FakeCachedBuild:
    instances: ClassVar[list[_FakeCachedBuild]] = []

    def __init__(self, settings: Settings, output: Output, *, export: bool = True, no_export_reason: str = "") -> None:
        self.export = export
        self.no_export_reason = no_export_reason
        self.requests: list[CacheRequest] = []
        self.finished = False
        self.store = None  # no store: no seeding
        self.slots: dict[str, CacheSlot] = {}
        _FakeCachedBuild.instances.append(self)

    def prepare(self, requests: list[CacheRequest]) -> dict[str, CacheSlot]:
        self.requests = list(requests)
        self.slots = {r.key: _slot(["type=local,src=/c/x,digest=sha256:1"],
                                   "type=local,dest=/st" if self.export else None) for r in requests}  # fmt: skip
        return self.slots

    def publish_ready(self) -> None:
        pass

    def run_with_recovery(self, run: Callable[[], int], stale: Callable[[], bool] | None = None) -> int:
        return run()

    def finish(self, *, summary: bool = True) -> None:
        self.finished = True

    def raise_if_strict(self) -> None:
        pass

    def summary_lines(self) -> list[str]:
        return [f"{key}: fake summary" for key in self.slots]


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, object]:
    seen: dict[str, object] = {}
    _FakeCachedBuild.instances = []
    monkeypatch.setattr(cached_build, "CachedBuild", _FakeCachedBuild)
    monkeypatch.setattr(toolchain, "real_docker", lambda env: Path("/real/docker"))
    monkeypatch.setattr(toolchain, "buildx_available", lambda env: seen.get("buildx", True))

    def probe(docker: Path, env: object, global_args: object = (), builder: object = None) -> tuple[Builder, None]:
        seen["probe"] = (global_args, builder)
        return seen.get("builder", Builder(driver="docker", containerd_store=True)), None  # type: ignore[return-value]

    def run_foreground(argv: list[str], env: object, on_tick: object = None) -> int:
        seen["run"] = argv
        return 7

    def exec_replace(argv: list[str], env: object) -> None:
        seen["exec"] = argv

    monkeypatch.setattr(toolchain, "probe_builder", probe)
    monkeypatch.setattr(runner, "run_foreground", run_foreground)
    monkeypatch.setattr(runner, "exec_replace", exec_replace)
    monkeypatch.setattr(compose_v1, "service_of", lambda build, env, cwd: None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
    return seen


def _settings(tmp_path: Path) -> Settings:
    return Settings(cache_dir=tmp_path / "cache")


def test_build_runs_buildx_with_cache_flags_and_returns_its_exit_code(fake_run: dict[str, object],
                                                                      tmp_path: Path) -> None:  # fmt: skip
    code = docker_build.main(["build", "--network", "none", "-t", "x", "."], _settings(tmp_path), Output())
    assert code == 7
    assert fake_run["run"] == ["/real/docker", "buildx", "build", "--cache-from", "type=local,src=/c/x,digest=sha256:1",
                               "--cache-to", "type=local,dest=/st", "--network", "none", "-t", "x", "."]  # fmt: skip
    build = _FakeCachedBuild.instances[0]
    assert build.finished
    assert build.requests[0].export_scope == f"{tmp_path.name}/x"


def test_non_docker_driver_gets_load_unless_an_output_is_given(fake_run: dict[str, object], tmp_path: Path) -> None:
    fake_run["builder"] = Builder(driver="docker-container", containerd_store=None)
    docker_build.main(["build", "-t", "x", "."], _settings(tmp_path), Output())
    assert "--load" in fake_run["run"]  # type: ignore[operator]
    docker_build.main(["build", "--push", "-t", "x", "."], _settings(tmp_path), Output())
    assert "--load" not in fake_run["run"]  # type: ignore[operator]
    docker_build.main(["buildx", "build", "-t", "x", "."], _settings(tmp_path), Output())
    assert "--load" not in fake_run["run"]  # type: ignore[operator]


def test_classic_store_imports_only(fake_run: dict[str, object], tmp_path: Path) -> None:
    fake_run["builder"] = Builder(driver="docker", containerd_store=False)
    docker_build.main(["buildx", "build", "-t", "x", "."], _settings(tmp_path), Output())
    build = _FakeCachedBuild.instances[0]
    assert not build.export
    assert "classic image store" in build.no_export_reason
    assert "--cache-to" not in fake_run["run"]  # type: ignore[operator]
    assert "--cache-from" in fake_run["run"]  # type: ignore[operator]


def test_builder_and_global_options_reach_the_probe(fake_run: dict[str, object], tmp_path: Path) -> None:
    docker_build.main(["-H", "unix:///s", "buildx", "build", "--builder", "bk", "."], _settings(tmp_path), Output())
    assert fake_run["probe"] == (["-H", "unix:///s"], "bk")


@pytest.mark.parametrize(
    "args",
    [
        ["ps", "-a"],
        ["build", "--help"],
        ["build", "a", "b"],
        ["buildx", "build", "--check", "."],
        ["buildx", "bake"],
    ],
)
def test_other_commands_pass_through_unchanged(fake_run: dict[str, object], tmp_path: Path,
                                               args: list[str]) -> None:  # fmt: skip
    docker_build.main(args, _settings(tmp_path), Output())
    assert fake_run["exec"] == ["/real/docker", *args]
    assert "run" not in fake_run


@pytest.mark.parametrize(("env", "buildx"), [({"DOCKER_BUILDKIT": "0"}, True), ({}, False)])
def test_legacy_builder_passes_through_with_one_notice(
    fake_run: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    env: dict[str, str], buildx: bool,
) -> None:  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    fake_run["buildx"] = buildx
    docker_build.main(["build", "-t", "x", "."], _settings(tmp_path), Output())
    assert fake_run["exec"] == ["/real/docker", "build", "-t", "x", "."]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("composecache: ")


def test_disabled_passes_through(fake_run: dict[str, object], tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, disabled=True)
    docker_build.main(["build", "."], settings, Output())
    assert fake_run["exec"] == ["/real/docker", "build", "."]


def test_dry_run_prints_the_command_and_runs_nothing(fake_run: dict[str, object], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    settings = Settings(cache_dir=tmp_path, dry_run=True)
    assert docker_build.main(["build", "-t", "x", "."], settings, Output()) == 0
    assert "run" not in fake_run
    captured = capsys.readouterr()
    assert captured.out.startswith("/real/docker buildx build --cache-from")
    assert captured.err == "composecache: x: fake summary\n"
    assert _FakeCachedBuild.instances[0].finished


# --- docker ... compose -----------------------------------------------------------------------------


@pytest.fixture
def compose_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, object]:
    from composecache.compose import frontend

    seen: dict[str, object] = {}

    def run(args: list[str], settings: Settings, output: Output, env: dict[str, str]) -> int:
        seen["frontend"] = (args, env)
        return 0

    def exec_replace(argv: list[str], env: dict[str, str]) -> None:
        seen["exec"] = (argv, env)

    monkeypatch.setattr(frontend, "run", run)
    monkeypatch.setattr(runner, "exec_replace", exec_replace)
    monkeypatch.setattr(toolchain, "real_docker", lambda env: Path("/real/docker"))
    plugins = tmp_path / "config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").write_text("#!/bin/sh\n")
    (plugins / "docker-compose").chmod(0o755)
    seen["config"] = str(tmp_path / "config")
    return seen


def _compose(args: list[str], env: dict[str, str], settings: Settings | None = None) -> None:
    from composecache.docker import compose_passthrough as docker_compose

    command = docker_args.classify(args)
    docker_compose.run(command, args, settings or Settings(cache_dir=Path("/nonexistent")), Output(), env)


def test_compose_global_options_become_environment(compose_calls: dict[str, object]) -> None:
    env = {"DOCKER_CONFIG": str(compose_calls["config"]), "DOCKER_HOST": "unix:///old",
           "DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND": "/usr/bin/docker", "COMPOSECACHE_SHIM": "plugin"}  # fmt: skip
    _compose(["--context", "remote", "compose", "-p", "x", "up", "--build"], env)
    args, child_env = cast(tuple[list[str], dict[str, str]], compose_calls["frontend"])
    assert args == ["-p", "x", "up", "--build"]
    assert child_env["DOCKER_CONTEXT"] == "remote"
    assert "DOCKER_HOST" not in child_env
    assert "DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND" not in child_env
    assert "COMPOSECACHE_SHIM" not in child_env


def test_compose_with_an_option_without_environment_runs_unchanged(
    compose_calls: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"DOCKER_CONFIG": str(compose_calls["config"])}
    _compose(["-D", "compose", "up"], env)
    argv, child_env = cast(tuple[list[str], dict[str, str]], compose_calls["exec"])
    assert argv == ["/real/docker", "-D", "compose", "up"]
    assert child_env["COMPOSECACHE_DISABLE"] == "1"  # the plugin shim must not bring it back
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_compose_from_the_plugin_shim_passes_through_to_the_real_plugin(compose_calls: dict[str, object]) -> None:
    env = {"COMPOSECACHE_SHIM": "plugin", "COMPOSECACHE_REAL_COMPOSE": "/real/plugin",
           "DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND": "/usr/bin/docker"}  # fmt: skip
    _compose(["-l", "debug", "compose", "up"], env)
    argv, child_env = cast(tuple[list[str], dict[str, str]], compose_calls["exec"])
    assert argv == ["/real/plugin", "-l", "debug", "compose", "up"]
    assert child_env == env


def test_compose_without_a_compose_plugin_is_left_to_docker(
    compose_calls: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(toolchain, "find_plugin", lambda name, env: None)
    _compose(["compose", "build"], {"DOCKER_CONFIG": str(tmp_path / "empty"), "HOME": str(tmp_path)})
    argv, _ = cast(tuple[list[str], dict[str, str]], compose_calls["exec"])
    assert argv == ["/real/docker", "compose", "build"]


def test_config_option_moves_the_plugin_directory_for_the_buildx_check(
    fake_run: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_configs: list[str | None] = []

    def buildx_available(env: dict[str, str]) -> bool:
        seen_configs.append(env.get("DOCKER_CONFIG"))
        return True

    monkeypatch.setattr(toolchain, "buildx_available", buildx_available)
    docker_build.main(["-D", "--config", "/cfg", "build", "."], _settings(tmp_path), Output())
    docker_build.main(["--config=/cfg2", "build", "."], _settings(tmp_path), Output())
    assert seen_configs == ["/cfg", "/cfg2"]
