"""Names other sessions chose never drive the terminal (found by tests/e2e/test_security.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from composecache.cached_build import CachedBuild, CacheRequest
from composecache.commands import cache
from composecache.output import Output, printable
from composecache.settings import Settings
from composecache.store import Store
from tests.unit.store_fakes import publish_layers

HOSTILE = "api\x1b]0;pwned\x07\r\x1b[2J\nfake line\u202etxt.exe"


def test_printable_escapes_controls_and_bidi_overrides() -> None:
    assert printable(HOSTILE) == "api\\x1b]0;pwned\\x07\\x0d\\x1b[2J\\x0afake line\\u202etxt.exe"
    assert printable("compose said:\n\tdetails", keep_newlines=True) == "compose said:\n\tdetails"
    assert printable("naïve 漢字 ok") == "naïve 漢字 ok"


def test_every_line_composecache_prints_is_free_of_control_characters(tmp_path: Path) -> None:
    stream = io.StringIO()
    build = CachedBuild(Settings(cache_dir=tmp_path / "cache"), Output(stream=stream))
    build.prepare([CacheRequest("api", HOSTILE, (HOSTILE,))])
    build.output.warn(f"something about {HOSTILE}")
    build.finish()
    out = stream.getvalue()
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    (summary,) = [line for line in out.splitlines() if ": scope " in line]  # one line, whatever the name holds
    assert summary.endswith("fake line\\u202etxt.exe: cold (nothing to import); nothing exported (not built)")


def test_cache_ls_shows_hostile_names_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    publish_layers(Store.open(tmp_path / "cache"), HOSTILE, [b"layer"])
    assert cache.main(["ls"], Settings(cache_dir=tmp_path / "cache"), Output()) == 0
    out = capsys.readouterr().out
    assert "api\\x1b]0;pwned" in out and "\x1b" not in out and "\r" not in out
