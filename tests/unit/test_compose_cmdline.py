from __future__ import annotations

import pytest

from composecache.compose import cmdline


def test_global_flags_with_and_without_values_and_the_subcommand() -> None:
    parsed = cmdline.parse(
        [
            "-f",
            "a.yml",
            "--file=b.yml",
            "-fc.yml",
            "-p",
            "proj",
            "--profile",
            "x",
            "--env-file",
            ".env.dev",
            "--compatibility",
            "--ansi",
            "never",
            "up",
            "--build",
            "-d",
        ]
    )
    assert parsed.files == ["a.yml", "b.yml", "c.yml"]
    assert parsed.project_name == "proj"
    assert parsed.profiles == ["x"]
    assert parsed.env_files == [".env.dev"]
    assert parsed.subcommand == "up"
    assert parsed.sub_args == ["--build", "-d"]
    assert parsed.global_args == [
        "-p",
        "proj",
        "--profile",
        "x",
        "--env-file",
        ".env.dev",
        "--compatibility",
        "--ansi",
        "never",
    ]
    assert parsed.can_build


@pytest.mark.parametrize(
    ("args", "can_build"),
    [
        (["build"], True),
        (["up", "-d"], True),
        (["up", "--no-build", "-d"], False),
        (["up", "--no-build=false"], True),
        (["create"], True),
        (["watch"], True),
        (["run", "--rm", "api", "echo", "--no-build"], True),  # the container's argument, not compose's
        (["run", "--no-build", "api"], False),
        (["ps"], False),
        (["down", "-v"], False),
        (["logs", "build"], False),
        (["--dry-run", "up"], False),
        ([], False),
    ],
)
def test_which_commands_can_build(args: list[str], can_build: bool) -> None:
    assert cmdline.parse(args).can_build is can_build


def test_services_are_found_after_options_with_values() -> None:
    assert cmdline.parse(["up", "-d", "--scale", "api=2", "api", "web"]).services == ["api", "web"]
    assert cmdline.parse(["build", "--build-arg", "X=1", "api"]).services == ["api"]
    assert cmdline.parse(["run", "-e", "A=1", "--rm", "api", "sh", "-c", "x"]).services == ["api"]


def test_argv_puts_the_files_first_and_keeps_everything_else() -> None:
    parsed = cmdline.parse(["-p", "x", "-f", "a.yml", "up", "--build"])
    assert parsed.argv(files=["a.yml", "/tmp/o.yaml"]) == [
        "-f",
        "a.yml",
        "-f",
        "/tmp/o.yaml",
        "-p",
        "x",
        "up",
        "--build",
    ]


def test_config_argv_drops_output_flags_but_keeps_project_flags() -> None:
    parsed = cmdline.parse(["--ansi", "never", "--progress=plain", "-p", "x", "--profile", "p", "up"])
    assert parsed.config_argv(["c.yml"]) == ["-f", "c.yml", "-p", "x", "--profile", "p", "config"]


def test_double_dash_ends_global_options() -> None:
    parsed = cmdline.parse(["--", "build"])
    assert parsed.subcommand == "build"
