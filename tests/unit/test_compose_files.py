from __future__ import annotations

from pathlib import Path

from composecache.compose.files import find_files


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
    assert found.origin == "-f"


def test_compose_file_variable_with_separator(tmp_path: Path) -> None:
    env = {"COMPOSE_FILE": "a.yml;b.yml", "COMPOSE_PATH_SEPARATOR": ";"}
    found = find_files([], None, [], env, tmp_path)
    assert found.files == [str(tmp_path / "a.yml"), str(tmp_path / "b.yml")]
    assert found.origin == "COMPOSE_FILE"


def test_compose_file_from_the_dotenv_file(tmp_path: Path) -> None:
    _touch(tmp_path / ".env", "# comment\nexport COMPOSE_FILE='base.yml:dev.yml'\n")
    found = find_files([], None, [], {}, tmp_path)
    assert found.files == [str(tmp_path / "base.yml"), str(tmp_path / "dev.yml")]


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


def test_override_yml_is_preferred_like_compose_go(tmp_path: Path) -> None:
    _touch(tmp_path / "compose.yaml")
    _touch(tmp_path / "compose.override.yaml")
    _touch(tmp_path / "compose.override.yml")
    found = find_files([], None, [], {}, tmp_path)
    assert found.files[1] == str(tmp_path / "compose.override.yml")


def test_project_directory_is_where_discovery_starts(tmp_path: Path) -> None:
    _touch(tmp_path / "proj" / "compose.yml")
    found = find_files([], "proj", [], {}, tmp_path)
    assert found.files == [str(tmp_path / "proj" / "compose.yml")]
    assert found.project_dir == tmp_path / "proj"


def test_nothing_found(tmp_path: Path) -> None:
    assert find_files([], None, [], {}, tmp_path).files == []
