"""The one YAML module: every YAML composecache reads or writes goes through here (as pre-commit's yaml.py).

PyYAML with libyaml's C loader and dumper where they are built in (parsing a
large project's `compose config` output: ~12 ms, against ~120 ms for a pure
Python parser; it sits on every build's critical path), the pure-Python ones
otherwise.  Booleans are YAML 1.2's, as compose reads them: `on`, `yes`,
`off` and `no` stay strings.
"""

from __future__ import annotations

import re
from typing import Any

import yaml as _pyyaml

YAMLError = _pyyaml.YAMLError
_BaseLoader = getattr(_pyyaml, "CSafeLoader", _pyyaml.SafeLoader)
_BaseDumper = getattr(_pyyaml, "CSafeDumper", _pyyaml.SafeDumper)
_BOOL_TAG = "tag:yaml.org,2002:bool"


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader with YAML 1.2 booleans (true/false only)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load(text: str) -> Any:
    """Parse one YAML document (YAMLError when it is not valid YAML)."""
    return _pyyaml.load(text, Loader=_Loader)


def dump(document: Any) -> str:
    """A document as block-style YAML, keys sorted (for people: the --dry-run preview)."""
    return str(_pyyaml.dump(document, Dumper=_BaseDumper, default_flow_style=False, allow_unicode=True))
