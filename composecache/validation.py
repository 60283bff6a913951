"""JSON Schemas shipped in schemas/: loading and validation with dotted-path errors."""

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
    """Every schema error as `dotted.path: message` (all collected, none raised)."""
    import jsonschema  # slow to import: only when something is validated

    validator = jsonschema.Draft202012Validator(load(name))
    found = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join([prefix] * bool(prefix) + [str(part) for part in error.absolute_path])
        found.append(f"{path or '(top level)'}: {error.message}")
    return found
