"""Scope names -> registry tags: valid, lower-case, at most 128 characters, collision-free.

A tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (the OCI distribution spec).  The
tag of a scope is the store's own directory name for it (store/naming.py: a
readable slug and 64 bits of sha256 over the exact name), so `Api` and `api`
get different tags; a namespace other than the default is part of the hash and
of the slug, so two trust domains never share a tag.
"""

from __future__ import annotations

import re

from composecache.settings import DEFAULT_NAMESPACE
from composecache.store.naming import name_hash, safe_dirname, slug

TAG_MAX = 128
TAG_RE = re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,127}$")
NAMESPACE_SLUG_MAX = 24


def scope_tag(scope: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The registry tag that holds `scope`'s cache (in `namespace`)."""
    if namespace == DEFAULT_NAMESPACE:
        tag = safe_dirname(scope)
    else:
        if not scope:
            raise ValueError("a scope name must be a non-empty string")
        # "\0" cannot occur in a namespace name from the environment: no two pairs share the hashed text.
        ns = slug(namespace)[:NAMESPACE_SLUG_MAX].rstrip("._-") or "_"
        tag = f"{ns}.{slug(scope)}-{name_hash(namespace + chr(0) + scope)}"
    assert TAG_RE.match(tag) and len(tag) <= TAG_MAX, tag
    return tag
