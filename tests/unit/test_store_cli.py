"""`composecache cache ...` through the command line (cli.main, its error boundary): output shapes and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from composecache import cli
from composecache.store import Store
from composecache.units import format_size, parse_duration, parse_size
from tests.unit.store_fakes import publish_layers, write_blob


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "cache")
    shared = os.urandom(2048)
    publish_layers(store, "api", [shared, b"api layer"])
    publish_layers(store, "web", [shared, b"web layer"])
    return store


def run(
    args: list[str], store_dir: Path | None, capsys: pytest.CaptureFixture[str], **env: str
) -> tuple[int, str, str]:
    """`composecache cache ARGS...` with COMPOSECACHE_DIR=store_dir (and `env`): (exit code, stdout, stderr)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPOSECACHE_DIR", str(store_dir or "/nonexistent/composecache"))
        for name, value in env.items():
            patch.setenv(name, value)
        code = cli.main(["cache", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stats_json_shape_counts_each_blob_once(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["stats", "--json"], store.base, capsys)
    assert code == 0
    data = json.loads(out)
    assert {"root", "bytes", "blobs", "orphan_bytes", "scopes"} <= data.keys()
    assert data["root"] == str(store.root)
    blob_files = list(store.layout.blob_dir.iterdir())
    assert data["blobs"] == len(blob_files) == 7  # shared + 2 own layers + 2 configs + 2 manifests
    assert data["bytes"] == sum(p.stat().st_size for p in blob_files)
    assert data["orphan_bytes"] == 0
    by_name = {s["name"]: s for s in data["scopes"]}
    assert set(by_name) == {"api", "web"}
    for scope in by_name.values():
        assert {"name", "bytes", "last_used"} <= scope.keys()
        assert scope["bytes"] > 2048
        assert scope["last_used"].endswith("Z")
    assert sum(s["bytes"] for s in data["scopes"]) > data["bytes"], "a shared blob counts in each scope"


def test_cache_dir_option_and_namespace_option(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["--cache-dir", str(store.base), "stats", "--json"], None, capsys)
    assert code == 0
    assert json.loads(out)["blobs"] == 7
    code, out, _ = run(["--cache-dir", str(store.base), "--namespace", "other", "stats", "--json"], None, capsys)
    assert code == 0
    assert json.loads(out)["blobs"] == 0
    assert json.loads(out)["namespace"] == "other"
    assert not Store.open(store.base, "other", read_only=True).root.exists(), "stats wrote nothing"


def test_settings_namespace_is_used(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    Store.open(store.base, "team")
    code, out, _ = run(["stats", "--json"], store.base, capsys, COMPOSECACHE_NAMESPACE="team")
    assert code == 0
    assert json.loads(out)["namespace"] == "team"


def test_ls_and_stats_are_short_and_readable(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["ls"], store.base, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SCOPE", "SIZE", "LAST", "USED", "STATUS"]
    assert {line.split()[0] for line in lines[1:3]} == {"api", "web"}
    assert "2 scopes" in lines[-1]
    code, out, _ = run(["stats"], store.base, capsys)
    assert code == 0
    assert "7 blobs" in out
    assert len(out.splitlines()) <= 8


def test_verify_exit_codes_and_problem_lines(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["verify", "--deep"], store.base, capsys)[0] == 0
    layer = store.layout.blob(__import__("hashlib").sha256(b"api layer").hexdigest())
    layer.unlink()
    code, out, _ = run(["verify"], store.base, capsys)
    assert code == 1
    assert f"scope 'api': missing-blob sha256:{layer.name}" in out
    code, out, _ = run(["ls"], store.base, capsys)
    assert "quarantined" in out
    code, out, _ = run(["verify", "--json"], store.base, capsys)
    assert code == 0
    assert json.loads(out)["sound"] is True
    assert len(json.loads(out)["quarantine"]) == 1


def test_gc_json_and_human(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    write_blob(store.root, b"orphan")
    code, out, _ = run(["gc", "--grace", "0", "--json"], store.base, capsys)
    assert code == 0
    data = json.loads(out)
    assert data["blobs_removed"] == 1
    assert data["fits"] is True
    code, out, _ = run(["gc", "--keep-storage", "0", "--grace", "0"], store.base, capsys)
    assert code == 0
    assert "evicted 2 scopes" in out


def test_gc_that_cannot_fit_warns(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["gc", "--keep-storage", "1k", "--grace", "1h"], store.base, capsys)
    assert code == 0
    assert "still" in err
    assert "grace period" in err


def test_prune(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["prune", "api"], store.base, capsys)
    assert code == 0
    assert "pruned scope 'api'" in out
    code, _, err = run(["prune", "api"], store.base, capsys)
    assert code == 1
    assert "no cache scope 'api'" in err


@pytest.mark.parametrize(
    "args",
    [[], ["bogus"], ["gc", "--keep-storage", "lots"], ["gc", "--grace", "soon"], ["prune"], ["stats", "--jsn"]],
)
def test_usage_errors_exit_2(store: Store, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(args, store.base, capsys)
    assert code == 2
    if args:  # `composecache cache` alone shows its help, as a usage error
        assert out == ""
        assert len(err.splitlines()) == 1, err
        assert err.startswith("composecache: error: ") and err.endswith(
            f" (see composecache cache {args[0]} --help)\n"
            if args[0] != "bogus"
            else " (see composecache cache --help)\n"
        )


def test_help_exits_0(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], store.base, capsys)
    assert code == 0
    assert "gc" in out


def test_unusable_cache_is_an_error_with_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run(["gc"], tmp_path / "file", capsys)
    assert code == 1
    assert "not a directory" in err
    code, _, err = run(["ls"], tmp_path / "missing", capsys)
    assert code == 1
    assert "does not exist" in err


def test_read_only_setting_refuses_gc(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["gc", "--grace", "0"], store.base, capsys, COMPOSECACHE_READ_ONLY="1")
    assert code == 1
    assert "read-only" in err


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("512", 512), ("10GB", 10 * 10**9), ("500MiB", 500 * 2**20), ("10g", 10 * 2**30), ("1.5kB", 1500)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("0", 0), ("30s", 30), ("10m", 600), ("24h", 86400), ("7d", 604800),
                                               ("1h30m", 5400)])  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10 parsecs", "-1", "5iB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 999, 1536, 10 * 2**20, 3 * 2**30)] == ["0 B", "999 B", "1.50 KiB",
                                                                                "10.0 MiB", "3.00 GiB"]  # fmt: skip
