"""JSON Schemas shipped in schemas/: loading and validation with dotted-path errors.

The schemas are the contract (tests check them with `jsonschema`).  On the
build path composecache validates with the small interpreter below, which
covers exactly the keywords our schemas use: importing `jsonschema` costs
about 230 ms, more than composecache's whole overhead budget.  A schema that
uses any other keyword is rejected loudly (tests keep the two in agreement).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
SUPPORTED = {
    "$schema", "$id", "$defs", "$ref", "title", "description", "type", "properties", "additionalProperties",
    "required", "minProperties", "items", "minItems", "maxItems", "pattern", "not", "enum", "minLength", "maxLength",
}  # fmt: skip
TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
}


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
    root = load(name)
    found: list[tuple[list[str], str]] = []
    _check(instance, root, root, [prefix] if prefix else [], found)
    return [f"{'.'.join(path) or '(top level)'}: {message}" for path, message in sorted(found)]


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    if not ref.startswith("#/$defs/"):
        raise ValueError(f"unsupported $ref {ref!r}")
    resolved: dict[str, Any] = root["$defs"][ref[len("#/$defs/") :]]
    return resolved


def _check(value: Any, schema: dict[str, Any], root: dict[str, Any], path: list[str], found: list[Any]) -> None:
    schema = _resolve(schema, root)
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise ValueError(f"schema keyword(s) not supported by composecache's validator: {sorted(unknown)}")
    expected = schema.get("type")
    if expected is not None:
        types = TYPES[expected]
        if not isinstance(value, types) or (expected == "integer" and isinstance(value, bool)):
            found.append((path, f"{value!r} is not of type '{expected}'"))
            return
    if "enum" in schema and value not in schema["enum"]:
        found.append((path, f"{value!r} is not one of {schema['enum']!r}"))
    if "not" in schema:
        inner: list[Any] = []
        _check(value, schema["not"], root, path, inner)
        if not inner:
            found.append((path, f"{value!r} should not be valid under {schema['not']!r}"))
    if isinstance(value, str):
        _check_string(value, schema, path, found)
    if isinstance(value, list):
        _check_array(value, schema, root, path, found)
    if isinstance(value, dict):
        _check_object(value, schema, root, path, found)


def _check_string(value: str, schema: dict[str, Any], path: list[str], found: list[Any]) -> None:
    if "pattern" in schema and not re.search(schema["pattern"], value):
        found.append((path, f"{value!r} does not match {schema['pattern']!r}"))
    if len(value) < schema.get("minLength", 0):
        found.append((path, f"{value!r} is too short"))
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        found.append((path, f"{value[:40]!r}... is too long"))


def _check_array(
    value: list[Any], schema: dict[str, Any], root: dict[str, Any], path: list[str], found: list[Any]
) -> None:
    if len(value) < schema.get("minItems", 0):
        found.append((path, f"{value!r} should be non-empty" if not value else f"{value!r} is too short"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        found.append((path, f"{value!r} is too long"))
    if "items" in schema:
        for index, item in enumerate(value):
            _check(item, schema["items"], root, [*path, str(index)], found)


def _check_object(
    value: dict[Any, Any], schema: dict[str, Any], root: dict[str, Any], path: list[str], found: list[Any]
) -> None:
    for key in schema.get("required", []):
        if key not in value:
            found.append((path, f"{key!r} is a required property"))
    if len(value) < schema.get("minProperties", 0):
        found.append((path, f"{value!r} should be non-empty"))
    properties = schema.get("properties", {})
    additional = schema.get("additionalProperties", True)
    extra = [key for key in value if key not in properties]
    if additional is False and extra:
        names = ", ".join(repr(key) for key in extra)
        found.append((path, f"Additional properties are not allowed ({names} {'was' if len(extra) == 1 else 'were'} "
                            "unexpected)"))  # fmt: skip
    for key, item in value.items():
        if key in properties:
            _check(item, properties[key], root, [*path, str(key)], found)
        elif isinstance(additional, dict):
            _check(item, additional, root, [*path, str(key)], found)
