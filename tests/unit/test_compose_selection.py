"""The services a command builds, their scopes, the override's schema, the dry-run's truths."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from composecache import schema
from composecache.compose import cmdline, dryrun, scopes
from composecache.compose.project import ServiceSettings, model_from_config_output
from composecache.output import Output
from composecache.source_identity import SourceIdentity, identify
from composecache.store.store import spec_string

LOADED = ["app", "db", "tool"]  # what compose loads for `config tool` etc.: named services and dependencies


@pytest.mark.parametrize(
    ("args", "built"),
    [
        (["build"], LOADED),
        (["build", "tool"], ["tool"]),
        (["build", "--with-dependencies", "tool"], LOADED),
        (["up", "-d", "tool"], LOADED),
        (["up", "-d", "--no-deps", "tool"], ["tool"]),
        (["run", "--rm", "tool", "sh", "-c", "db"], LOADED),
        (["run", "--no-deps", "tool", "app"], ["tool"]),
        (["create", "app"], LOADED),
    ],
)
def test_the_services_a_command_builds(args: list[str], built: list[str]) -> None:
    assert cmdline.parse(args).built_services(LOADED) == built


def test_config_argv_names_the_command_s_services_after_a_separator() -> None:
    parsed = cmdline.parse(["-p", "x", "--profile", "p", "run", "--rm", "-e", "A=1", "tool", "echo", "hi"])
    assert parsed.config_argv([]) == ["-p", "x", "--profile", "p", "config", "--", "tool"]
    assert cmdline.parse(["--workdir", "w", "up"]).workdir == "w"


def test_cache_paths_with_commas_and_quotes_pass_the_override_schema() -> None:
    digest = "sha256:" + "a" * 64
    for path in ("/cache,dir/x", '/cache"dir/x', '/a,"b"/c', "/plain/dir"):
        document = {
            "services": {
                "app": {
                    "build": {
                        "cache_from": [spec_string([("type", "local"), ("src", path), ("digest", digest)])],
                        "cache_to": [spec_string([("type", "local"), ("dest", path), ("mode", "max")])],
                    }
                }
            }
        }
        assert schema.errors(document, "override") == [], path
    bad = {"services": {"app": {"build": {"cache_to": ["type=local,dest=/a,b"]}}}}  # unquoted comma
    assert schema.errors(bad, "override")
    reset = {"services": {"app": {"build": {"cache_to": ["type=local,dest=/a,reset=true"]}}}}
    assert schema.errors(reset, "override")


CONFIG = """\
name: p
services:
  a:
    image: example/one:1.0
    build: {context: /src/p/one}
  b:
    image: example/one:1.0
    build: {context: /src/p/one}
  c:
    image: example/one:2.0
    build: {context: /src/p/other}
  d:
    build: {context: /src/p/d, args: {X: "$$HOME"}}
"""


def test_services_that_build_one_image_one_way_share_a_scope() -> None:
    model = model_from_config_output(CONFIG)
    assert model.shared_builds() == {"b": "a"}
    assert model.services["c"].image_repository == "example/one"
    assert model.services["d"].image_repository is None


def test_without_git_the_scope_tells_projects_of_one_directory_name_apart() -> None:
    one = model_from_config_output("services:\n  app:\n    build: {context: /x/docker/..}\n")
    other = model_from_config_output("services:\n  app:\n    build: {context: /y/docker/app}\n")
    plain = SourceIdentity("docker")
    first = scopes.source_for(plain, one.services["app"], Path("/x/docker"))
    second = scopes.source_for(plain, other.services["app"], Path("/y/docker"))
    assert first.name != second.name and first.name.startswith("docker-")
    moved = model_from_config_output("services:\n  app:\n    build: {context: /elsewhere/docker/..}\n")
    assert scopes.source_for(plain, moved.services["app"], Path("/elsewhere/docker")).name == first.name
    from_git = SourceIdentity("github.com/o/r/docker", from_git=True)
    assert scopes.source_for(from_git, one.services["app"], Path("/x/docker")) is from_git
    request = scopes.request_for("app", ServiceSettings(), first, None)
    assert request.export_scope == f"{first.name}/app"


def _git(cwd: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_two_compose_projects_of_one_repository_get_two_identities(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "remote", "add", "origin", "git@example.com:team/mono.git")
    for sub in ("services/a", "services/b"):
        (tmp_path / sub).mkdir(parents=True)
    a = identify(tmp_path / "services" / "a", dict(os.environ))
    b = identify(tmp_path / "services" / "b", dict(os.environ))
    top = identify(tmp_path, dict(os.environ))
    assert (a.name, b.name, top.name) == (
        "example.com/team/mono/services/a",
        "example.com/team/mono/services/b",
        "example.com/team/mono",
    )


def test_dry_run_shows_effective_values_and_warns_of_missing_sources(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    model = model_from_config_output(
        f"services:\n  ok:\n    build: {{context: {tmp_path}/ctx, dockerfile: Dockerfile}}\n"
        f"  nodir:\n    build: {{context: {tmp_path}/gone}}\n"
        f"  nofile:\n    build: {{context: {tmp_path}/ctx, dockerfile: other.Dockerfile}}\n"
        f"  inline:\n    build: {{context: {tmp_path}/ctx, dockerfile_inline: FROM scratch}}\n"
        "  remote:\n    build: {context: 'https://github.com/o/r.git'}\n"
    )
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    stream = io.StringIO()
    notes = dryrun.missing_sources(model, list(model.services), Output(stream=stream))
    assert len(notes) == 2 and "nodir: build context" in notes[0] and "nofile: Dockerfile" in notes[1]
    assert stream.getvalue().count("warning") == 2
    diff = dryrun.service_diff("d", {"args": {"X": "$$HOME"}}, {"args": {"X": "$$HOME"}, "cache_to": ["a$$b"]})
    assert "$$" not in "\n".join(diff) and "X: $HOME" in "\n".join(diff) and "+  - a$b" in diff


def test_dry_run_of_a_command_that_builds_nothing_prints_what_really_runs(capsys: pytest.CaptureFixture[str]) -> None:
    dryrun.render_passthrough(["docker", "compose", "up", "--no-build"])
    out = capsys.readouterr().out
    assert "docker compose up --no-build" in out and "override" in out and "<override>" not in out
