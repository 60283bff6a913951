"""The session memo: a private, self-checking store of small answers that only ever saves time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from composecache.session import memo as memo_mod
from composecache.session.memo import Memo, content_stamp, fingerprint, stamp


def test_put_then_get(tmp_path: Path) -> None:
    memo = Memo(tmp_path / "m")
    assert memo.get("probe", "k" * 64) is None
    memo.put("probe", "k" * 64, {"a": [1, 2]})
    assert memo.get("probe", "k" * 64) == {"a": [1, 2]}
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o700
    assert all(entry.stat().st_mode & 0o777 == 0o600 for entry in (tmp_path / "m").iterdir())


def test_an_entry_answers_only_its_own_full_key(tmp_path: Path) -> None:
    memo = Memo(tmp_path)
    key = "a" * 40 + "1" * 24
    memo.put("probe", key, 1)
    assert memo.get("probe", "a" * 40 + "2" * 24) is None  # same file name, other key


@pytest.mark.parametrize("content", [b"", b"not json", b"[1, 2]", b'{"key": 1}'])
def test_damaged_entries_are_misses(tmp_path: Path, content: bytes) -> None:
    memo = Memo(tmp_path)
    memo.put("probe", "k" * 64, 1)
    (path,) = tmp_path.iterdir()
    path.write_bytes(content)
    assert memo.get("probe", "k" * 64) is None


def test_a_symlinked_entry_is_not_followed(tmp_path: Path) -> None:
    memo = Memo(tmp_path / "m")
    memo.put("probe", "k" * 64, 1)
    (path,) = (tmp_path / "m").iterdir()
    target = tmp_path / "planted.json"
    target.write_text(json.dumps({"key": "k" * 64, "value": 2}))
    path.unlink()
    path.symlink_to(target)
    assert memo.get("probe", "k" * 64) is None


def test_a_directory_others_may_write_is_not_used(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir(mode=0o700)
    memo = Memo(directory)
    memo.put("probe", "k" * 64, 1)
    directory.chmod(0o770)
    assert memo.get("probe", "k" * 64) is None
    memo.put("probe", "j" * 64, 1)
    assert len(list(directory.iterdir())) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_directory_someone_else_owns_is_not_used(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir(mode=0o700)
    Memo(directory).put("probe", "k" * 64, 1)
    os.chown(directory, 65534, 65534)
    assert Memo(directory).get("probe", "k" * 64) is None


def test_unwritable_or_missing_places_are_silent(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    memo = Memo(blocker / "m")
    memo.put("probe", "k" * 64, 1)  # no exception
    assert memo.get("probe", "k" * 64) is None


def test_read_only_and_off(tmp_path: Path) -> None:
    Memo(tmp_path, writable=False).put("probe", "k" * 64, 1)
    assert list(tmp_path.iterdir()) == []
    assert Memo.from_env({"COMPOSECACHE_MEMO": "0", "COMPOSECACHE_MEMO_DIR": str(tmp_path)}).directory is None
    assert Memo.from_env({"COMPOSECACHE_MEMO_DIR": str(tmp_path)}).directory == tmp_path
    assert Memo.from_env({"HOME": "/home/u"}).directory == Path("/home/u/.cache/composecache-memo")
    assert Memo.from_env({"XDG_CACHE_HOME": "/x", "HOME": "/home/u"}).directory == Path("/x/composecache-memo")
    assert Memo.from_env({"XDG_CACHE_HOME": "relative"}).directory is None


def test_the_memo_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memo_mod, "MAX_ENTRIES", 5)
    memo = Memo(tmp_path)
    for number in range(12):
        memo.put("probe", f"{number:02d}".ljust(64, "0"), number)
    assert len(list(tmp_path.iterdir())) == 5
    assert memo.get("probe", "11".ljust(64, "0")) == 11


def test_stamps_and_fingerprints(tmp_path: Path) -> None:
    path = tmp_path / "f"
    assert stamp(path) == "-" and content_stamp(path) == "-"
    path.write_text("same")
    first, first_content = stamp(path), content_stamp(path)
    path.unlink()
    path.write_text("same")  # rewritten with the same content: a new file, the same content
    assert content_stamp(path) == first_content
    assert stamp(path) != first or os.stat(path).st_ino == int(first.split(":")[1])
    assert fingerprint("a", [1, {"b": 2}]) == fingerprint("a", [1, {"b": 2}]) != fingerprint("a", [1, {"b": 3}])
