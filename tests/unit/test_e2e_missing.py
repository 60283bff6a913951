"""The e2e suite's one rule for a missing engine or tool: skip on a developer's machine, fail with CI=true."""

from __future__ import annotations

import pytest

from tests.e2e import harness


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_fails_in_ci_and_skips_elsewhere(
    ci: str, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="mount\\(8\\) is missing") as raised:
        harness.missing("mount(8) is missing", "apt-get install mount")
    assert "apt-get install mount" in str(raised.value)
