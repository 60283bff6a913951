"""The one build lifecycle (cached_build.run): reserve -> prepare the daemon -> run with recovery -> publish."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from composecache import cached_build
from composecache.cached_build import BuildTool, CachedBuild, CacheRequest
from composecache.errors import StrictFallback
from composecache.output import Output
from composecache.session import seeding
from composecache.settings import Settings
from composecache.store import Store
from composecache.store.layout import Layout
from tests.unit.store_fakes import fake_export, publish_layers

REQUEST = CacheRequest("api", "api", ("api",))


class RecordingTool(BuildTool):
    """Records what each run saw; fails the first `failures` runs with `status`."""

    def __init__(self, *, failures: int = 0, status: int = 1, stale: bool = False) -> None:
        self.runs: list[tuple[list[str], list[str]]] = []
        self.previews = 0
        self.failures, self.status, self.stale_answer = failures, status, stale
        self.stale_asked = 0

    def run(self, build: CachedBuild) -> int:
        slot = build.slots["api"]
        self.runs.append((slot.cache_from_entries, slot.cache_to_entries))
        if slot.staging is not None and len(self.runs) > self.failures:
            fake_export(slot.staging, [b"a new layer"])
        return self.status if len(self.runs) <= self.failures else 0

    def preview(self, build: CachedBuild) -> int:
        self.previews += 1
        return 3

    def stale(self, build: CachedBuild) -> bool:
        self.stale_asked += 1
        return self.stale_answer


@pytest.fixture
def seeded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], object]]:
    """Every call of the seeding step: (the manifests it was given, the daemon); its release is recorded too."""
    calls: list[tuple[list[str], object]] = []

    class Released:
        def release(self) -> None:
            calls.append((["released"], None))

    def seed_imports(layout: Layout | None, manifests: Sequence[str], daemon: object, env: Mapping[str, str],
                     output: Output, *, skip: object = ()) -> Released:  # fmt: skip
        calls.append((list(manifests), daemon))
        return Released()

    monkeypatch.setattr(seeding, "seed_imports", seed_imports)
    return calls


def _run(tmp_path: Path, tool: BuildTool, **settings: object) -> tuple[int, str]:
    stream = io.StringIO()
    status = cached_build.run(Settings(cache_dir=tmp_path / "cache", **settings), Output(stream=stream),  # type: ignore[arg-type]
                              [REQUEST], tool, env={}, daemon="a daemon")  # fmt: skip
    return status, stream.getvalue()


def test_a_build_imports_seeds_runs_publishes_and_releases(
    tmp_path: Path, seeded: list[tuple[list[str], object]]
) -> None:
    published = publish_layers(Store.open(tmp_path / "cache"), "api", [b"layer one"])
    tool = RecordingTool()
    status, out = _run(tmp_path, tool)
    assert status == 0
    ((cache_from, cache_to),) = tool.runs
    assert len(cache_from) == 1 and cache_from[0].endswith(f",digest={published.digest}")
    assert len(cache_to) == 1 and cache_to[0].startswith("type=local,dest=")
    assert seeded == [([published.digest], "a daemon"), (["released"], None)]  # seeded before the run, released after
    assert "api: scope api: import from api; exported" in out
    stats = Store.open(tmp_path / "cache").stats()
    assert [scope.name for scope in stats.scopes] == ["api"]
    assert stats.staging_live == stats.staging_dead == 0, "staging is cleaned up"
    assert stats.blobs == 6, "the new export (layer, config, manifest) was published beside the old one"


def test_dry_run_previews_and_neither_seeds_nor_runs(tmp_path: Path, seeded: list[tuple[list[str], object]]) -> None:
    publish_layers(Store.open(tmp_path / "cache"), "api", [b"layer one"])
    tool = RecordingTool()
    status, _ = _run(tmp_path, tool, dry_run=True)
    assert (status, tool.previews, tool.runs, seeded) == (3, 1, [], [])


def test_a_stale_input_runs_the_tool_once_more(tmp_path: Path, seeded: list[tuple[list[str], object]]) -> None:
    tool = RecordingTool(failures=1, stale=True)
    status, _ = _run(tmp_path, tool)
    assert (status, len(tool.runs), tool.stale_asked) == (0, 2, 1)


def test_a_failure_that_is_not_ours_runs_once(tmp_path: Path, seeded: list[tuple[list[str], object]]) -> None:
    tool = RecordingTool(failures=1, stale=False)
    status, out = _run(tmp_path, tool)
    assert (status, len(tool.runs), tool.stale_asked) == (1, 1, 1)
    assert "nothing was published" not in out


def test_a_tool_that_cannot_run_again_is_never_asked_to(tmp_path: Path, seeded: list[tuple[list[str], object]]) -> None:
    tool = RecordingTool(failures=1, stale=True)
    tool.may_run_again = False
    status, _ = _run(tmp_path, tool)
    assert (status, len(tool.runs), tool.stale_asked) == (1, 1, 0)
    assert seeded[-1] == (["released"], None)


def test_extra_cache_entries_reach_every_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             seeded: list[tuple[list[str], object]]) -> None:  # fmt: skip
    def extra(request: CacheRequest, settings: Settings) -> tuple[list[str], list[str]]:
        return [f"type=registry,ref=r/{request.export_scope}"], [f"type=registry,ref=r/{request.export_scope},mode=max"]

    monkeypatch.setattr(cached_build, "extra_cache_entries", extra)
    tool = RecordingTool()
    _run(tmp_path, tool, read_only=True)
    ((cache_from, cache_to),) = tool.runs
    assert cache_from == ["type=registry,ref=r/api"]  # nothing local to import yet
    assert cache_to == ["type=registry,ref=r/api,mode=max"]  # read-only: no local export


def test_an_unusable_store_still_runs_the_tool_unseeded(tmp_path: Path, seeded: list[tuple[list[str], object]]) -> None:
    (tmp_path / "cache").write_text("not a directory")
    tool = RecordingTool()
    status, out = _run(tmp_path, tool)
    assert (status, tool.runs, seeded) == (0, [([], [])], [])
    assert "cache unavailable" in out


def test_a_cache_problem_is_one_line_and_a_normal_build(
    tmp_path: Path, seeded: list[tuple[list[str], object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMPOSECACHE_STRICT", raising=False)
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    tool = RecordingTool()
    status, out = _run(tmp_path, tool)
    assert status == 0 and len(tool.runs) == 1
    assert tool.runs[0] == ([], [])  # built without the cache
    (line,) = [line for line in out.splitlines() if "warning" in line]
    assert "cache unavailable" in line and "building without it" in line


def test_strict_mode_builds_cleans_up_then_fails_the_run(
    tmp_path: Path, seeded: list[tuple[list[str], object]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPOSECACHE_STRICT", "1")
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    tool = RecordingTool()
    with pytest.raises(StrictFallback, match="strict mode: cache unavailable"):
        _run(tmp_path, tool)
    assert len(tool.runs) == 1  # the user's build still ran once
