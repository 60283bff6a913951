"""Unit tests never touch the real session memo (~/.cache/composecache-memo)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_memo(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path_factory.mktemp("memo") / "memo"
    monkeypatch.setenv("COMPOSECACHE_MEMO_DIR", str(directory))
    return directory
