"""Compose's command line: global flags, the subcommand, its services.

Only what composecache needs is understood: which global flags take a value
(so the subcommand is found), the compose files and project options, whether
the subcommand can build, and which services it names.  Everything is passed
on to compose exactly as the user wrote it, except `-f` which composecache
re-adds (with its override file last).
"""

from __future__ import annotations

from collections.abc import Iterable

# `docker compose --help` (2.26 - 2.40, v5).  Flags not listed are taken as booleans.
GLOBAL_VALUE_FLAGS = {
    "-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--project-directory",
    "--workdir", "--ansi", "--parallel", "--progress",
}  # fmt: skip
BUILDING_SUBCOMMANDS = {"build", "up", "run", "create", "watch"}
# Options that take a value, per building subcommand, to find its positional arguments.
SUBCOMMAND_VALUE_FLAGS = {
    "build": {"--build-arg", "--builder", "-m", "--memory", "--progress", "--ssh", "--secret", "--provenance",
              "--sbom"},
    "up": {"--attach", "--no-attach", "--exit-code-from", "--pull", "--scale", "-t", "--timeout",
           "--wait-timeout"},
    "create": {"--pull", "--scale"},
    "run": {"--name", "-e", "--env", "--env-from-file", "-l", "--label", "-p", "--publish", "-u", "--user",
            "-v", "--volume", "-w", "--workdir", "--entrypoint", "--cap-add", "--cap-drop", "--pull"},
    "watch": set(),
}  # fmt: skip


# A plain class, not a dataclass: the build path's records stay cheap (docs/design.md, test_import_budget.py).
class ComposeArgs:
    """A compose command line, taken apart (filled in by parse())."""

    project_name: str | None = None
    project_directory: str | None = None  # --project-directory
    workdir: str | None = None  # --workdir (deprecated spelling; compose refuses both together)
    compose_dry_run: bool = False
    subcommand: str | None = None

    def __init__(self) -> None:
        self.global_args: list[str] = []  # as given, without -f/--file
        self.files: list[str] = []
        self.env_files: list[str] = []
        self.profiles: list[str] = []
        self.sub_args: list[str] = []
        self.services: list[str] = []

    @property
    def can_build(self) -> bool:
        """True when this compose command may build images."""
        if self.subcommand not in BUILDING_SUBCOMMANDS or self.compose_dry_run:
            return False
        return not _flag_set(self._own_options(), "--no-build")

    def _own_options(self) -> list[str]:
        """The subcommand's options (for `run`, not the container command after the service)."""
        if self.subcommand != "run":
            return self.sub_args
        options = []
        values = SUBCOMMAND_VALUE_FLAGS["run"]
        args = iter(self.sub_args)
        for arg in args:
            if not arg.startswith("-") or arg == "--":
                break
            options.append(arg)
            if arg in values:
                options.append(next(args, ""))
        return options

    def argv(self, files: Iterable[str] | None = None, subcommand_args: list[str] | None = None) -> list[str]:
        """The compose arguments, with `files` as the -f list (None: the user's own)."""
        chosen = self.files if files is None else list(files)
        out = [arg for path in chosen for arg in ("-f", path)]
        out += self.global_args
        if self.subcommand is not None:
            out.append(self.subcommand)
        out += self.sub_args if subcommand_args is None else subcommand_args
        return out

    def config_argv(self, files: Iterable[str], services: Iterable[str] | None = None) -> list[str]:
        """`config [SERVICE...]` with the user's project options (no output-changing flags).

        Compose loads the project for `config SERVICE...` as for every command that names
        services: those services (their profiles switched on) and their dependencies.
        """
        keep = []
        args = iter(self.global_args)
        for arg in args:
            name = arg.split("=", 1)[0]
            if name in {"--ansi", "--progress", "--parallel", "--dry-run"}:
                if name in GLOBAL_VALUE_FLAGS and "=" not in arg:
                    next(args, None)
                continue
            keep.append(arg)
            if name in GLOBAL_VALUE_FLAGS and "=" not in arg:
                keep.append(next(args, ""))
        chosen = list(self.services if services is None else services)
        return [arg for path in files for arg in ("-f", path)] + keep + ["config", *(["--"] if chosen else []), *chosen]

    def built_services(self, model_services: Iterable[str]) -> list[str]:
        """Of the services compose loads for this command (`config SERVICE...`), the ones it may build.

        `build SERVICE...` builds the named ones only (`--with-dependencies`: their dependencies
        too); `up`/`create`/`run`/`watch` also build the dependencies they start, unless `--no-deps`.
        """
        loaded = list(model_services)
        if not self.services:
            return loaded
        options = self._own_options()
        if self.subcommand == "build":
            narrow = not _flag_set(options, "--with-dependencies")
        else:
            narrow = _flag_set(options, "--no-deps")
        return [name for name in loaded if name in self.services] if narrow else loaded


def _flag_set(args: list[str], flag: str) -> bool:
    value = None
    for arg in args:
        if arg == "--":
            break
        if arg == flag:
            value = True
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1].lower() not in {"false", "0"}
    return bool(value)


def _split(arg: str, long_flags: set[str]) -> tuple[str, str | None]:
    """('--file', 'x') for '--file=x'; ('-f', 'x') for '-fx'; (arg, None) otherwise."""
    if arg.startswith("--"):
        name, sep, value = arg.partition("=")
        return (name, value) if sep else (arg, None)
    if len(arg) > 2 and arg[:2] in long_flags:
        value = arg[2:]
        return arg[:2], value[1:] if value.startswith("=") else value
    return arg, None


def parse(args: list[str]) -> ComposeArgs:  # noqa: C901, PLR0912
    """Split `compose` arguments into global options, subcommand and its arguments."""
    parsed = ComposeArgs()
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        name, inline = _split(arg, GLOBAL_VALUE_FLAGS)
        value: str | None = inline
        consumed = 1
        if name in GLOBAL_VALUE_FLAGS and value is None:
            value = args[i + 1] if i + 1 < len(args) else None
            consumed = 2
        if name in {"-f", "--file"}:
            if value is not None:
                parsed.files.append(value)
        else:
            parsed.global_args += args[i : i + consumed]
            if name in {"-p", "--project-name"}:
                parsed.project_name = value
            elif name == "--project-directory":
                parsed.project_directory = value
            elif name == "--workdir":
                parsed.workdir = value
            elif name == "--env-file" and value is not None:
                parsed.env_files.append(value)
            elif name == "--profile" and value is not None:
                parsed.profiles.append(value)
            elif name == "--dry-run":
                parsed.compose_dry_run = inline is None or inline.lower() not in {"false", "0"}
        i += consumed
    if i < len(args) and args[i] == "--":
        i += 1
    if i < len(args):
        parsed.subcommand = args[i]
        parsed.sub_args = args[i + 1 :]
        parsed.services = _services(parsed.subcommand, parsed.sub_args)
    return parsed


def _services(subcommand: str, args: list[str]) -> list[str]:
    values = SUBCOMMAND_VALUE_FLAGS.get(subcommand)
    if values is None:
        return []
    services = []
    it = iter(args)
    for arg in it:
        if arg == "--":
            services += list(it)
            break
        if arg.startswith("-") and arg != "-":
            if arg in values:
                next(it, None)
            continue
        services.append(arg)
        if subcommand == "run":
            break  # the rest is the container's command
    return services
