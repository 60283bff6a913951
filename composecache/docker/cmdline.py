"""The docker command line, as far as composecache needs it.

    docker [GLOBAL OPTIONS] build|builder build|image build [BUILD OPTIONS] CONTEXT
    docker [GLOBAL OPTIONS] buildx [--builder X] build|b [BUILD OPTIONS] CONTEXT
    docker [GLOBAL OPTIONS] compose [COMPOSE ARGS...]

Flags are parsed the way the docker CLI's pflag does: `--flag value`,
`--flag=value`, `-t value`, `-tvalue`, `-t=value` and combined short booleans
(`-qt x`).  The flag tables cover `docker build --help` and `docker buildx
build --help` of docker 26.1 / buildx 0.13.1 and docker 28.5 / buildx 0.29.1,
hidden compatibility flags included.  A flag we do not know is taken as a
boolean; if that leaves anything but exactly one positional argument we do not
guess: the caller passes the command through unchanged (fail open).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

# `docker --help`, Global Options.
GLOBAL_VALUE_LONG = {"--host", "--context", "--config", "--log-level", "--tlscacert", "--tlscert", "--tlskey"}
GLOBAL_VALUE_SHORT = {"H", "c", "l"}
GLOBAL_BOOL_SHORT = {"D", "v", "h"}

# `docker build` (legacy flags included: buildx accepts them as hidden no-ops) and
# `docker buildx build` (0.13.1 .. 0.29.1, hidden and experimental ones included).
BUILD_VALUE_LONG = {
    "--add-host", "--allow", "--annotation", "--attest", "--build-arg", "--build-context", "--builder",
    "--cache-from", "--cache-to", "--call", "--cgroup-parent", "--file", "--iidfile", "--label",
    "--metadata-file", "--network", "--no-cache-filter", "--output", "--platform", "--progress",
    "--provenance", "--sbom", "--secret", "--shm-size", "--ssh", "--tag", "--target", "--ulimit",
    "--cpu-period", "--cpu-quota", "--cpu-shares", "--cpuset-cpus", "--cpuset-mems", "--isolation",
    "--memory", "--memory-swap", "--security-opt", "--print", "--invoke", "--root", "--server-config",
    "--policy",
}  # fmt: skip
BUILD_VALUE_SHORT = {"f": "--file", "t": "--tag", "o": "--output", "m": "--memory", "c": "--cpu-shares"}
BUILD_BOOL_SHORT = {"q": "--quiet", "D": "--debug"}
BUILDX_ROOT_VALUE_LONG = {"--builder"}

# The forms of a build: what the user typed -> whether it is `buildx build` already.
PLAIN_BUILD = "build"  # docker build / builder build / image build: legacy or buildx alias
BUILDX_BUILD = "buildx-build"
COMPOSE = "compose"
OTHER = "other"


class DockerCommand(NamedTuple):
    """`docker` arguments split into global options, the command words and the rest."""

    global_args: list[str]
    kind: str
    words: list[str]  # e.g. ["buildx", "--builder", "x", "build"]
    rest: list[str]  # the build (or compose) arguments
    buildx_builder: str | None = None  # `docker buildx --builder X build`

    @property
    def is_build(self) -> bool:
        return self.kind in {PLAIN_BUILD, BUILDX_BUILD}


def _takes_value(arg: str, long_flags: set[str], short_flags: set[str] | Mapping[str, str]) -> bool:
    """Whether `arg` (a flag) consumes the next argument as its value."""
    if arg.startswith("--"):
        return "=" not in arg and arg in long_flags
    # -abc: pflag reads short booleans until a flag that takes a value; the rest is its value.
    for position, letter in enumerate(arg[1:], start=1):
        if letter in short_flags:
            return position == len(arg) - 1
    return False


def split_global_options(args: list[str]) -> tuple[list[str], list[str]]:
    """(docker's global options, everything from the command word on)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[: i + 1], args[i + 1 :]
        if not arg.startswith("-") or arg == "-":
            break
        i += 2 if _takes_value(arg, GLOBAL_VALUE_LONG, GLOBAL_VALUE_SHORT) else 1
    return args[:i], args[i:]


def classify(args: list[str]) -> DockerCommand:
    """Which docker command `args` is, and where its own arguments start."""
    global_args, rest = split_global_options(args)
    command = DockerCommand(global_args, OTHER, [], rest)
    if not rest:
        return command
    word = rest[0]
    if word == "build":
        return DockerCommand(global_args, PLAIN_BUILD, [word], rest[1:])
    if word in {"builder", "image"} and rest[1:2] == ["build"]:
        return DockerCommand(global_args, PLAIN_BUILD, rest[:2], rest[2:])
    if word == "compose":
        return DockerCommand(global_args, COMPOSE, [word], rest[1:])
    if word == "buildx":
        i, builder = 1, None
        while i < len(rest) and rest[i].startswith("-") and rest[i] != "-":
            name, sep, inline = rest[i].partition("=")
            if name == "--builder":
                builder = inline if sep else (rest[i + 1] if i + 1 < len(rest) else None)
            i += 2 if _takes_value(rest[i], BUILDX_ROOT_VALUE_LONG, set()) else 1
        if i < len(rest) and rest[i] in {"build", "b"}:
            return DockerCommand(global_args, BUILDX_BUILD, rest[: i + 1], rest[i + 1 :], builder)
    return command


# A plain class, not a dataclass: the build path's records stay cheap (docs/design.md, test_import_budget.py).
class BuildArgs:
    """What composecache needs to know about one build's flags (the flags stay as typed; filled in by parse)."""

    context: str = ""
    dockerfile: str | None = None
    target: str | None = None
    builder: str | None = None
    iidfile: str | None = None
    has_output: bool = False  # -o/--output, --load or --push: the user chose where the image goes
    call: str | None = None  # --call / --check / --print: evaluate instead of build
    quiet: bool = False
    help: bool = False

    def __init__(self) -> None:
        self.tags: list[str] = []


class BuildArgsError(ValueError):
    """The build arguments are not something we understand well enough to rewrite."""

    def __init__(self, message: str, positionals: int) -> None:
        super().__init__(message)
        self.positionals = positionals


def _flags_at(args: list[str], i: int) -> tuple[list[tuple[str, str | None]], int]:
    """The flags at args[i] as [(long name, value or None)], and how many args they use."""
    arg = args[i]
    if arg.startswith("--"):
        name, sep, inline = arg.partition("=")
        if sep:
            return [(name, inline)], 1
        if name in BUILD_VALUE_LONG:
            return [(name, args[i + 1] if i + 1 < len(args) else None)], 2
        return [(name, None)], 1
    flags: list[tuple[str, str | None]] = []
    for position, letter in enumerate(arg[1:], start=1):
        if letter in BUILD_VALUE_SHORT:
            inline = arg[position + 1 :]
            if inline:
                return [*flags, (BUILD_VALUE_SHORT[letter], inline.removeprefix("="))], 1
            return [*flags, (BUILD_VALUE_SHORT[letter], args[i + 1] if i + 1 < len(args) else None)], 2
        flags.append(("--help" if letter == "h" else BUILD_BOOL_SHORT.get(letter, f"-{letter}"), None))
    return flags, 1


def _is_true(value: str | None) -> bool:
    return value is None or value.lower() not in {"false", "0", "f"}


# Flags whose value is kept as is, and the BuildArgs field it goes to.
_VALUE_FIELDS = {"--file": "dockerfile", "--target": "target", "--builder": "builder", "--iidfile": "iidfile",
                 "--call": "call"}  # fmt: skip


def _record(parsed: BuildArgs, tags: list[str], name: str, value: str | None) -> None:
    if name in _VALUE_FIELDS:
        setattr(parsed, _VALUE_FIELDS[name], value)
    elif name == "--help":
        parsed.help = True
    elif name == "--tag" and value is not None:
        tags.append(value)
    elif name == "--output" or (name in {"--load", "--push"} and _is_true(value)):
        parsed.has_output = True
    elif name == "--quiet":
        parsed.quiet = _is_true(value)
    elif name in {"--check", "--print"} and _is_true(value):
        parsed.call = value or name[2:]


def parse_build(args: list[str]) -> BuildArgs:
    """Parse `build` arguments (everything after the command words)."""
    positionals: list[str] = []
    tags: list[str] = []
    parsed = BuildArgs()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            positionals += args[i + 1 :]
            break
        if not arg.startswith("-") or arg == "-":
            positionals.append(arg)
            i += 1
            continue
        flags, used = _flags_at(args, i)
        i += used
        for name, value in flags:
            _record(parsed, tags, name, value)
    parsed.tags = tags
    if parsed.help:
        return parsed
    if len(positionals) != 1:
        found = f"{len(positionals)}: {' '.join(positionals)}" if positionals else "none"
        raise BuildArgsError(f"expected one build context, found {found}", len(positionals))
    parsed.context = positionals[0]
    return parsed


def is_url_context(context: str) -> bool:
    """A remote context (git or HTTP(S) URL), by the docker CLI's own prefixes; else a local path."""
    return context.lower().startswith(("http://", "https://", "git://", "github.com/", "git@", "ssh://"))


def image_repository(tag: str) -> str:
    """`registry:5000/org/app:1.2@sha256:...` -> `org/app`: the repository, without registry and tag.

    The first path component is a registry when it has a `.` or `:`, is
    `localhost`, or has upper-case letters (docker's reference grammar).
    Docker Hub's implicit `library/` is dropped, so `library/x` and `x` agree.
    """
    name = tag.split("@", 1)[0]
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        name = remainder
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name = name[:colon]
    return name.removeprefix("library/")


def global_options(global_args: list[str]) -> Iterator[tuple[str, str, bool]]:
    """docker's global options as (name, value, inline): `-Hx`, `-H=x`, `--host=x` and `--host x` alike.

    value is "" for a flag that takes none (inline False); `--` is passed over.
    """
    i = 0
    while i < len(global_args):
        arg = global_args[i]
        if arg.startswith("--"):
            name, sep, inline = arg.partition("=")
        elif len(arg) > 2:
            name, sep, inline = arg[:2], "=", arg[2:].removeprefix("=")
        else:
            name, sep, inline = arg, "", ""
        takes = _takes_value(name, GLOBAL_VALUE_LONG, GLOBAL_VALUE_SHORT)
        value = inline if sep else (global_args[i + 1] if takes and i + 1 < len(global_args) else "")
        i += 1 if sep or not takes else 2
        if name != "--":
            yield name, value, bool(sep)


def global_option(global_args: list[str], name: str) -> str | None:
    """The value docker would use for the global option `name` (the last one given), or None."""
    found = None
    for option, value, _ in global_options(global_args):
        if option == name:
            found = value
    return found


# Docker global options that have an environment-variable equivalent (for
# `docker ... compose`, where compose is started by composecache, not by the
# docker CLI).  The others (-D, -l, --tls, --tlscacert, ...) have none.
def global_options_env(global_args: list[str]) -> dict[str, str | None] | None:
    """The environment changes equivalent to docker's global options; None if one has no equivalent.

    A value of None means "remove this variable".
    """
    changes: dict[str, str | None] = {}
    for name, value, inline in global_options(global_args):
        if name in {"-H", "--host"}:
            if "DOCKER_HOST" in changes and changes["DOCKER_HOST"] != value:
                return None  # several hosts: the docker CLI refuses them anyway
            changes["DOCKER_HOST"] = value
        elif name in {"-c", "--context"}:
            changes["DOCKER_CONTEXT"] = value
            changes.setdefault("DOCKER_HOST", None)  # --context wins over DOCKER_HOST, the variable does not
        elif name == "--config":
            changes["DOCKER_CONFIG"] = value
        elif name == "--tlsverify" and _is_true(value if inline else None):
            changes["DOCKER_TLS_VERIFY"] = "1"
        else:
            return None
    return changes


def apply_env(env: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    result = dict(env)
    for key, value in changes.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result
