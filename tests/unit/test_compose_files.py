from __future__ import annotations

from pathlib import Path

import pytest

from composecache.compose import dotenv, files
from composecache.compose.files import find_files, invocation
from composecache.session.toolchain import Version

OLD = Version("2.26.1")
CURRENT = Version("2.40.3")


def _touch(path: Path, text: str = "services: {}\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_explicit_files_win_and_the_project_dir_is_the_first_files_dir(tmp_path: Path) -> None:
    _touch(tmp_path / "compose.yaml")
    _touch(tmp_path / "other" / "x.yml")
    found = find_files(["other/x.yml"], None, [], {"COMPOSE_FILE": "compose.yaml"}, tmp_path)
    assert found.files == ["other/x.yml"]
    assert found.project_dir == tmp_path / "other"
    assert found.origin == "-f" and not found.imitated
    assert invocation(found, ["/o.yaml"]) == (["other/x.yml", "/o.yaml"], {})


@pytest.mark.parametrize("version", [OLD, CURRENT])
def test_compose_file_variable_is_relative_to_the_working_directory_not_the_project_directory(
    tmp_path: Path, version: Version
) -> None:
    _touch(tmp_path / "a.yml")
    _touch(tmp_path / "b.yml")
    (tmp_path / "proj").mkdir()
    env = {"COMPOSE_FILE": "a.yml;b.yml", "COMPOSE_PATH_SEPARATOR": ";"}
    found = find_files([], "proj", [], env, tmp_path, version=version)
    assert found.files == [str(tmp_path / "a.yml"), str(tmp_path / "b.yml")]
    assert found.origin == "COMPOSE_FILE"
    assert found.project_dir == tmp_path / "proj"


def test_a_missing_compose_file_is_compose_s_error(tmp_path: Path) -> None:
    found = find_files([], None, [], {"COMPOSE_FILE": "nope.yml"}, tmp_path)
    assert found.files == [] and found.error is not None and "nope.yml" in found.error


@pytest.mark.parametrize("version", [OLD, CURRENT])
def test_compose_file_from_the_dotenv_file_with_compose_go_s_dialect(tmp_path: Path, version: Version) -> None:
    for name in ("base.yml", "dev.yml", "x/extra.yml"):
        _touch(tmp_path / name)
    _touch(tmp_path / ".env", "# comment\nDIR=x\nexport COMPOSE_FILE=\"base.yml:dev.yml\" # trailing\n"
                              "COMPOSE_FILE=${COMPOSE_FILE}:${DIR:-y}/extra.yml\n")  # fmt: skip
    found = find_files([], None, [], {}, tmp_path, version=version)
    assert found.files == [str(tmp_path / n) for n in ("base.yml", "dev.yml", "x/extra.yml")]
    assert found.origin == ".env" and found.imitated


def test_the_environment_wins_over_the_dotenv_file(tmp_path: Path) -> None:
    _touch(tmp_path / "a.yml")
    _touch(tmp_path / "b.yml")
    _touch(tmp_path / ".env", "COMPOSE_FILE=b.yml\n")
    assert find_files([], None, [], {"COMPOSE_FILE": "a.yml"}, tmp_path).files == [str(tmp_path / "a.yml")]


def test_compose_env_files_and_env_file_flag(tmp_path: Path) -> None:
    _touch(tmp_path / "a.yml")
    _touch(tmp_path / "b.yml")
    _touch(tmp_path / "e1.env", "COMPOSE_FILE=a.yml\n")
    _touch(tmp_path / "e2.env", "COMPOSE_FILE=b.yml\n")
    env = {"COMPOSE_ENV_FILES": "e1.env,e2.env"}
    assert find_files([], None, [], env, tmp_path).files == [str(tmp_path / "b.yml")]  # the later file wins
    assert find_files([], None, ["e1.env"], env, tmp_path).files == [str(tmp_path / "a.yml")]  # the flag wins


def test_dotenv_from_a_subdirectory_differs_between_compose_generations(tmp_path: Path) -> None:
    # compose < 2.27.1 reads the .env beside the file its first pass finds upwards; newer ones read
    # the working directory's .env first, so the root's COMPOSE_FILE does not apply from below.
    _touch(tmp_path / "compose.yaml")
    _touch(tmp_path / "other.yml")
    _touch(tmp_path / ".env", "COMPOSE_FILE=other.yml\n")
    below = tmp_path / "sub"
    below.mkdir()
    old = find_files([], None, [], {}, below, version=OLD)
    assert old.files == [] and old.error is not None  # relative to the working directory: sub/other.yml
    current = find_files([], None, [], {}, below, version=CURRENT)
    assert current.files == [str(tmp_path / "compose.yaml")] and current.origin == "discovered"


def test_old_compose_gets_the_first_pass_env_when_its_dotenv_is_elsewhere(tmp_path: Path) -> None:
    _touch(tmp_path / "docker" / "compose.yml")
    _touch(tmp_path / ".env", "COMPOSE_FILE=docker/compose.yml\nTAG=v1\n")
    found = find_files([], None, [], {}, tmp_path, version=OLD)
    assert found.files == [str(tmp_path / "docker" / "compose.yml")]
    assert found.extra_env == {"COMPOSE_FILE": "docker/compose.yml", "TAG": "v1"}
    files_, env = invocation(found, ["/tmp/o.yaml"])
    assert files_ == []
    assert env["TAG"] == "v1"
    assert env["COMPOSE_FILE"].split(env["COMPOSE_PATH_SEPARATOR"]) == [found.files[0], "/tmp/o.yaml"]
    assert find_files([], None, [], {}, tmp_path, version=CURRENT).extra_env == {}


def test_discovery_walks_up_and_adds_the_override_beside_the_file(tmp_path: Path) -> None:
    _touch(tmp_path / "docker-compose.yml")
    _touch(tmp_path / "compose.yaml")
    _touch(tmp_path / "compose.override.yaml")
    _touch(tmp_path / "docker-compose.override.yml")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    found = find_files([], None, [], {}, nested)
    assert found.files == [str(tmp_path / "compose.yaml"), str(tmp_path / "compose.override.yaml")]
    assert found.project_dir == tmp_path
    assert found.origin == "discovered"
    assert str(nested) in found.inputs and str(tmp_path) in found.inputs  # the memo key sees new files there


def test_override_yml_is_preferred_like_compose_go(tmp_path: Path) -> None:
    _touch(tmp_path / "compose.yaml")
    _touch(tmp_path / "compose.override.yaml")
    _touch(tmp_path / "compose.override.yml")
    found = find_files([], None, [], {}, tmp_path)
    assert found.files[1] == str(tmp_path / "compose.override.yml")


def test_project_directory_and_workdir_are_where_discovery_starts(tmp_path: Path) -> None:
    _touch(tmp_path / "proj" / "compose.yml")
    for project_directory, workdir in (("proj", None), (None, "proj")):
        found = find_files([], project_directory, [], {}, tmp_path, workdir=workdir)
        assert found.files == [str(tmp_path / "proj" / "compose.yml")]
        assert found.project_dir == tmp_path / "proj"


def test_nothing_found(tmp_path: Path) -> None:
    found = find_files([], None, [], {}, tmp_path)
    assert found.files == [] and found.origin == "none" and found.error


def test_the_separator_avoids_every_path() -> None:
    assert files.separator_for(["/a:b", "/c"]) == ";"
    assert files.separator_for(["/a", "/b"]) == ":"


def test_generations() -> None:
    assert files.generation(Version("2.26.1")) == "old"
    assert files.generation(Version("2.27.1")) == "local-dotenv"
    assert files.generation(Version("2.27.2")) == "current"
    assert files.generation(None) == "current"


def _env(text: str, current: dict[str, str] | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    env = current or {}
    dotenv.parse(text, out, env.get)
    return out


def test_dotenv_dialect() -> None:
    parsed = _env(
        "A=1\n"
        "export B = two words # comment\n"
        "C='single ${A} \\n'\n"
        'D="double ${A} \\n \\$A"\n'
        "E: yaml\n"
        "F=x#not-a-comment\n"
        "G=${MISSING:-dflt}-${A:+set}-${MISSING-}\n"
        "H=$$literal\n"
        "I=${A}${A}\n"
        "A=last\n"
    )
    assert parsed == {
        "A": "last",
        "B": "two words",
        "C": "single ${A} \\n",
        "D": "double 1 \n $A",
        "E": "yaml",
        "F": "x#not-a-comment",
        "G": "dflt-set-",
        "H": "$literal",
        "I": "11",
    }


def test_dotenv_the_environment_wins_in_interpolation_and_inherited_keys() -> None:
    assert _env("A=file\nB=${A}\nC\n", {"A": "os", "C": "inherited"}) == {"A": "file", "B": "os", "C": "inherited"}


def test_dotenv_errors_are_compose_s_errors() -> None:
    for text in ('A="unterminated\n', "A B=1\n", "A=${REQUIRED:?needed}\n", "A$=1\n"):
        with pytest.raises(dotenv.DotenvError):
            _env(text)


def test_dotenv_files_in_order_and_the_shared_map_of_newer_compose(tmp_path: Path) -> None:
    first = _touch(tmp_path / "a.env", "HOST=localhost\nURL=http://${HOST}\n")
    second = _touch(tmp_path / "b.env", "HOST=dev\nURL=http://${HOST}\n")
    for shared in (True, False):
        env = dotenv.read_env_files([first, second], {}, shared_map=shared)
        assert env == {"HOST": "dev", "URL": "http://dev" if shared else "http://localhost"}
