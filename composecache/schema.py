"""The JSON Schemas shipped in schemas/, checked with `jsonschema`; errors as dotted paths.

`jsonschema` costs ~100 ms to import, so nothing on a build's hot path calls
this: `x-composecache` is checked only when the session memo misses (the
verdict is remembered with the project, compose/model_memo.py), and the
generated override only in tests.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent


def schema_dir() -> Path:
    # In a wheel the schemas sit inside the package; in a checkout beside it.
    for candidate in (PACKAGE / "schemas", PACKAGE.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("composecache's schemas/ directory is missing from this installation")


@cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((schema_dir() / f"{name}.schema.json").read_text())
    return data


def errors(instance: object, name: str, prefix: str = "") -> list[str]:
    """Every error of `instance` against schemas/<name>.schema.json, as `dotted.path: message`, in path order."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load(name))
    found = []
    for error in validator.iter_errors(instance):
        path = ".".join([*([prefix] if prefix else []), *(str(part) for part in error.absolute_path)])
        found.append((path, error.message))
    return [f"{path or '(top level)'}: {message}" for path, message in sorted(found)]
