"""compose-go's `.env` reader and `${VAR}` interpolation, ported rule for rule.

Only discovery needs it: `COMPOSE_FILE`, `COMPOSE_PATH_SEPARATOR` may come
from an env file, and compose reads those files with its own dialect
(compose-go `dotenv/parser.go` and `template/template.go`, the same in
v2.0.2 and v2.9.1 except where `shared_map` says): `export ` prefixes,
`KEY: value`, inherited `KEY` lines, ` #` comments on unquoted values, single
quotes (literal), double quotes (escape sequences, then interpolation),
`${VAR:-default}` and friends with nested templates, `$$` for a literal `$`,
the last of repeated keys.  What this port gets wrong, the runtime self-check
(frontend.py) catches: it compares compose's model for the user's own
invocation with the one for composecache's file list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

Lookup = Callable[[str], "str | None"]


class DotenvError(Exception):
    """The env file is one compose refuses to read (compose fails the same way)."""


# compose-go template.DefaultPattern (case-insensitive names; `(.*)` greedy, as in Go's RE2 leftmost-first).
_PATTERN = re.compile(
    r"\$(?i:(?P<escaped>\$)|(?P<named>[_a-z][_a-z0-9]*)|\{(?:(?P<braced>[_a-z][_a-z0-9]*(?::?[-+?](.*))?)\}|(?P<invalid>)))"
)
_ESCAPE = re.compile(r"(\\(?:[abcfnrtv$\"\\]|0\d{0,3}))")
_EXPORT = re.compile(r"^export[\t\n\f\r ]+")
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\"}
_OPERATORS = (":?", "?", ":-", "-", ":+", "+")


def _is_space(char: str) -> bool:
    """compose-go's isSpace: a space but not a line break."""
    return char in "\t\v\f\r \x85\xa0"


def substitute(template: str, mapping: Lookup) -> str:
    """compose-go template.Substitute; raises DotenvError where compose reports an error."""
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        value, error = _replacement(match.group(0), mapping)
        if error and not errors:
            errors.append(error)
        return value

    result = _PATTERN.sub(replace, template)
    if errors:
        raise DotenvError(errors[0])
    return result


def _first_closing_brace(text: str) -> int:
    depth = 0
    i = 0
    while i < len(text):
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        if text[i] == "{":
            depth += 1
            i += 1
        i += 1
    return -1


def _operator_for(template: str) -> str:
    """The operator that occurs first in the whole matched text (compose-go sorts by index)."""
    found = [(template.find(op), n, op) for n, op in enumerate(_OPERATORS) if op in template]
    return min(found)[2] if found else ":?"


def _replacement(substring: str, mapping: Lookup) -> tuple[str, str | None]:
    operator = _operator_for(substring)
    closing = _first_closing_brace(substring)
    rest = ""
    if closing > -1:
        rest = substring[closing + 1 :]
        substring = substring[: closing + 1]
    match = _PATTERN.search(substring)
    groups = match.groupdict() if match is not None and match.start() == 0 else {}
    if groups.get("escaped"):
        return "$", None
    braced = False
    substitution = groups.get("named") or ""
    if not substitution:
        substitution = groups.get("braced") or ""
        braced = True
    if not substitution:
        return "", f"Invalid template: {substring!r}"
    if braced:
        try:
            applied, value = _apply(operator, substitution, mapping)
        except DotenvError as exc:
            return "", str(exc)
        if applied:
            try:
                return value + substitute(rest, mapping), None
            except DotenvError as exc:
                return "", str(exc)
    found = mapping(substitution)
    return found or "", None


def _apply(operator: str, substitution: str, mapping: Lookup) -> tuple[bool, str]:
    if operator not in substitution:
        return False, ""
    name, argument = substitution.split(operator, 1)
    argument = substitute(argument, mapping)
    value = mapping(name)
    if operator in {":?", "?"}:
        if value is None or (operator == ":?" and value == ""):
            reason = f": {argument}" if argument else ""
            raise DotenvError(f"required variable {name} is missing a value{reason}")
        return True, value
    if operator in {":-", "-"}:
        if value is None or (operator == ":-" and value == ""):
            return True, argument
        return True, value
    # ":+" / "+": the argument when the variable is set (and, for ":+", not empty)
    if value is not None and (operator == "+" or value != ""):
        return True, argument
    return True, value or ""


def _expand_escapes(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        escape = match.group(0)
        if escape == "\\$":
            return "$$"
        if escape.startswith("\\0"):
            digits = escape[2:]
            # Go: `\0ddd` becomes `\ddd`, which UnquoteChar accepts only as exactly 3 octal digits <= 0377.
            if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) <= 0o377:
                return chr(int(digits, 8))
            return escape
        return _SIMPLE_ESCAPES.get(escape[1], escape)

    return _ESCAPE.sub(replace, text)


def _statement_start(src: str) -> str:
    while True:
        stripped = src.lstrip()  # unicode.IsSpace, line breaks included
        if not stripped:
            return ""
        if stripped[0] != "#":
            return stripped
        newline = stripped.find("\n")
        if newline == -1:
            return ""
        src = stripped[newline:]


def _key(src: str) -> tuple[str, str, bool]:
    if _EXPORT.match(src):
        src = src[len("export") :]
        src = src[len(src) - len(src.lstrip("\t\v\f\r \x85\xa0")) :]
    key = ""
    offset = 0
    inherited = False
    for i, char in enumerate(src):
        if _is_space(char):
            continue
        if char in "=:\n":
            key = src[:i]
            offset = i + 1
            inherited = char == "\n"
            break
        if char in "_.-[]" or char.isalpha() or char.isnumeric():
            continue
        line = src.split("\n", 1)[0]
        raise DotenvError(f"unexpected character {char!r} in variable name {line!r}")
    if not src:
        raise DotenvError("zero length string")
    key = key.rstrip()
    rest = src[offset:]
    rest = rest[len(rest) - len(rest.lstrip("\t\v\f\r \x85\xa0")) :]
    return key, rest, inherited


def _value(src: str, out: Mapping[str, str], lookup: Lookup) -> tuple[str, str]:
    quote = src[:1] if src[:1] in {'"', "'"} else ""
    if not quote:
        value, _, rest = src.partition("\n")
        value = value.split(" #", 1)[0].rstrip()
        return _expand(value, out, lookup), rest
    escaped = False
    chars: list[str] = []
    for i in range(1, len(src)):
        char = src[i]
        if char != quote:
            if not escaped and char == "\\":
                escaped = True
                continue
            if escaped:
                escaped = False
                chars.append("\\")
            chars.append(char)
            continue
        if escaped:  # an escaped quote of the same kind
            escaped = False
            chars.append(char)
            continue
        value = "".join(chars)
        if quote == '"':
            value = _expand(_expand_escapes(value), out, lookup)
        return value, src[i + 1 :]
    raise DotenvError(f"unterminated quoted value {src.split(chr(10), 1)[0]}")


def _expand(value: str, out: Mapping[str, str], lookup: Lookup) -> str:
    def mapping(name: str) -> str | None:
        found = lookup(name)
        return found if found is not None else out.get(name)

    return substitute(value, mapping)


def parse(text: str, out: dict[str, str], lookup: Lookup) -> None:
    """Parse one env file's text into `out` (compose-go parser.parse)."""
    src = text.removeprefix("\ufeff")
    while True:
        src = _statement_start(src)
        if not src:
            return
        key, rest, inherited = _key(src)
        if " " in key:
            raise DotenvError("key cannot contain a space")
        if inherited:
            value = lookup(key)
            if value is not None:
                out[key] = value
            src = rest
            continue
        value, src = _value(rest, out, lookup)
        out[key] = value


def read_env_files(paths: list[Path], current: Mapping[str, str], *, shared_map: bool) -> dict[str, str]:
    """compose-go dotenv.GetEnvFromFile: the variables of `paths`, in order, the later file winning.

    `current` (the environment) wins in interpolation.  `shared_map` (compose-go >= 2.8, compose
    >= 2.39): every file parses into one map, so a file sees its own earlier keys after the
    earlier files' ones; before, each file had its own map, merged after it was read.
    """
    env: dict[str, str] = {}
    for path in paths:
        try:
            if path.is_dir():
                raise DotenvError(f"{path} is a directory")
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise DotenvError(f"couldn't find env file: {path}") from exc
        except OSError as exc:
            raise DotenvError(f"{path}: {exc.strerror}") from exc
        text = data.decode("utf-8", "surrogateescape")

        def lookup(name: str) -> str | None:
            return current[name] if name in current else env.get(name)

        if shared_map:
            parse(text, env, lookup)
        else:
            own: dict[str, str] = {}
            parse(text, own, lookup)
            env.update(own)
    return env
