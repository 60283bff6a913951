"""The bench's `remote` row: rendered next to the same run's local warm new session and tarball."""

from __future__ import annotations

from typing import Any

from bench import report


def test_the_remote_row_stands_beside_the_local_warm_session_and_the_tarball() -> None:
    results: dict[str, Any] = {
        "warm_new_session_s": 10.6,
        "tarball_s": 36.9,
        "remote": {"warm_new_host_s": 69.5, "runs_s": [78.68, 60.24], "fill": {"push_line": "pushed 4 scope(s)"}},
    }
    text = "\n".join(report.remote_markdown(results))
    assert "| `remote.warm_new_host_s` |" in text and "69.5 s | 78.68, 60.24 |" in text
    assert "10.6 s" in text and "36.9 s" in text and "pushed 4 scope(s)" in text
    assert report.SECTION_ROWS["remote"] is report.remote_markdown
