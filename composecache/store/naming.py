"""Caller-supplied names (scopes, namespaces) -> safe, stable, distinct directory names.

A scope name comes from a service name, an image name or a repository id: any
string.  It must never become a path that escapes the store, and two different
names must never share a directory.  The directory name is a readable slug of
the safe characters followed by a hash of the exact name:

    "api"            -> "api-<16 hex>"
    "../../etc"      -> "etc-<16 hex>"
    "Api" vs "api"   -> "api-<hash of 'Api'>" vs "api-<hash of 'api'>"

The slug only helps humans; the hash (64 bits of sha256 over the exact
UTF-8 bytes, lone surrogates included) keeps names distinct, and the slug is
lower-case so a case-insensitive filesystem cannot merge two entries.
"""

from __future__ import annotations

import hashlib
import re

SLUG_MAX = 48
HASH_HEX = 16
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_EDGES = "._-"
EMPTY_SLUG = "_"  # for names without a single safe character ("...", "é漢"): never a leading "-"
DIRNAME_RE = re.compile(rf"^(?:[a-z0-9][a-z0-9._-]{{0,{SLUG_MAX - 1}}}|_)-[0-9a-f]{{{HASH_HEX}}}$")


def name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_HEX]


def slug(name: str) -> str:
    """Lower-case ASCII letters, digits, `.`, `_`, `-`; never leading/trailing punctuation, bounded."""
    text = _UNSAFE.sub("_", name.lower())
    text = text.strip(_EDGES)[:SLUG_MAX].rstrip(_EDGES)
    return text or EMPTY_SLUG


def safe_dirname(name: str) -> str:
    """The directory name for `name`: `<slug>-<hash>` (at most 65 characters, never `.`/`..`)."""
    if not isinstance(name, str) or name == "":
        raise ValueError("a scope or namespace name must be a non-empty string")
    return f"{slug(name)}-{name_hash(name)}"


def is_safe_dirname(entry: str) -> bool:
    """Whether a directory entry looks like one we made (anything else under scopes/ is ignored)."""
    return DIRNAME_RE.match(entry) is not None
