"""Scope and namespace names -> directory names: safe, stable, distinct, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from composecache.store import Store
from composecache.store.naming import is_safe_dirname, safe_dirname

HOSTILE = [
    "../../etc",
    "..",
    ".",
    "/abs/path",
    "/",
    "a/b",
    "a\\b",
    "nul\x00byte",
    "tab\tnewline\n",
    "\x1b[31mred",
    "émoji-😀",
    "漢字",
    "\udcff-lone-surrogate",
    "x" * 10_000,
    "-leading-dash",
    " spaces ",
    "API",
    "api",
    "Api",
    "service:tag@sha256",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_every_name_maps_to_one_plain_bounded_directory_entry(name: str) -> None:
    entry = safe_dirname(name)
    assert is_safe_dirname(entry)
    assert "/" not in entry
    assert "\x00" not in entry
    assert entry not in {".", ".."}
    assert not entry.startswith(("-", "."))
    assert len(entry) <= 65
    assert entry.isascii()
    assert entry == entry.lower()
    assert all(ch.isalnum() or ch in "._-" for ch in entry)
    assert safe_dirname(name) == entry  # stable


def test_different_names_never_share_a_directory() -> None:
    names = [*HOSTILE, "x" * 10_001, "x" * 9_999, "../../etc/", "..//..//etc", "etc"]
    entries = [safe_dirname(name) for name in names]
    assert len(set(entries)) == len(names)


def test_names_differing_only_in_case_are_distinct_even_on_a_case_insensitive_filesystem() -> None:
    entries = {safe_dirname(n) for n in ("api", "API", "Api")}
    assert len({e.lower() for e in entries}) == 3


def test_slug_keeps_names_readable() -> None:
    assert safe_dirname("myproject/api").startswith("myproject_api-")
    assert safe_dirname("../../etc").startswith("etc-")


def test_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        safe_dirname("")


@pytest.mark.parametrize("name", ["../../etc", "/abs", "漢字", "x" * 10_000, "nul\x00"])
def test_hostile_scope_names_stay_inside_the_store(tmp_path: Path, name: str) -> None:
    store = Store.open(tmp_path / "cache")
    staging = store.prepare_export(name)
    assert staging.path.parent == store.root / "staging"
    assert store.layout.scope_dir(name).parent == store.root / "scopes"
    store.discard(staging)


@pytest.mark.parametrize("namespace", ["../../etc", "/abs", "Team-A", "team-a"])
def test_namespaces_are_mapped_the_same_way_and_are_separate(tmp_path: Path, namespace: str) -> None:
    store = Store.open(tmp_path / "cache", namespace)
    assert store.root.parent == tmp_path / "cache" / "ns"
    assert store.root.name == safe_dirname(namespace)
    other = Store.open(tmp_path / "cache", namespace + "x")
    assert other.root != store.root
