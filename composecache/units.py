"""Sizes and durations as people type them (`10GB`, `500MiB`, `30s`, `7d`) and as we print them.

Sizes: a bare number is bytes; `kB`/`MB`/`GB`/`TB` are powers of 1000 and
`KiB`/`MiB`/`GiB`/`TiB` powers of 1024 (units are case-insensitive, the `B`
optional: `10g` is 10 GiB, as `docker --memory` reads it).
Durations: a bare number is seconds; `s`, `m`, `h`, `d`, `w`, combinable (`1h30m`).
"""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)\s*$", re.I)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])", re.I)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """`10GB` -> 10_000_000_000, `500MiB` -> 524_288_000, `10g` -> 10 GiB, `0` -> 0."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 0, 500MiB, 10GB)")
    number, prefix, binary, byte = match.groups()
    power = _POWERS[prefix.lower()]
    if binary and not prefix:
        raise ValueError(f"not a size: {text!r} (examples: 0, 500MiB, 10GB)")
    # `10g`/`10k` without a B read as binary (docker's convention); `10GB` is decimal, `10GiB` binary.
    base = 1024 if binary or (prefix and not byte) else 1000
    return int(float(number) * base**power)


def parse_duration(text: str) -> float:
    """`0` -> 0, `30s`, `10m`, `24h`, `7d`, `1h30m` -> seconds."""
    stripped = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        return float(stripped)
    parts = _DURATION_PART.findall(stripped)
    if not parts or "".join(n + u for n, u in parts) != stripped:
        raise ValueError(f"not a duration: {text!r} (examples: 0, 30s, 10m, 24h, 7d)")
    return sum(float(number) * _SECONDS[unit.lower()] for number, unit in parts)


def format_size(size: int) -> str:
    """Binary units, about three significant figures: 0 B, 812 B, 1.21 KiB, 14.5 MiB, 1010 MiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            break
        value /= 1024
    if unit == "B":
        return f"{size} B"
    decimals = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:.{decimals}f} {unit}"


def format_age(seconds: float) -> str:
    """A short 'how long ago': 5s, 3m, 2h, 4d."""
    seconds = max(0.0, seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{int(seconds // length)}{unit}"
    return f"{int(seconds)}s"
