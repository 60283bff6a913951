"""`composecache doctor`: what is detected, and what to fix, one line each."""

from __future__ import annotations

import os

import typer

from composecache import runner
from composecache.commands.app import APP_OPTIONS, CommandState, state_of
from composecache.commands.app import run as run_app
from composecache.compose import versions
from composecache.errors import ComposecacheError
from composecache.output import Output
from composecache.session import toolchain
from composecache.settings import Settings

HELP = (
    "Check what composecache depends on, and say what to fix.\n\n"
    "\b\nIt looks at:\n"
    "  the docker CLI, Compose and buildx    found, and which versions\n"
    "  the builder and its image store       whether a cache can be exported\n"
    "  the cache directory                   writable, or import only\n"
    "  the shims                             installed, and the ones in effect\n"
    "  the compose project here              its x-composecache settings\n\n"
    "One line per finding: `ok`, `FIX` (followed by what to do) or `tip`."
)
app = typer.Typer(name="doctor", **APP_OPTIONS)  # type: ignore[arg-type]


def main(args: list[str], settings: Settings, output: Output) -> int:
    """Run `composecache doctor ARGS...`; 0 when nothing needs fixing, 1 otherwise, 2 for usage errors."""
    return run_app(app, "doctor", args, CommandState(settings, output))


@app.command(help=HELP, epilog="Exit status: 0 when nothing needs fixing, 1 otherwise, 2 for a usage error.")
def doctor(ctx: typer.Context) -> None:
    state = state_of(ctx)
    if findings(state.settings) > 0:
        raise typer.Exit(1)


def findings(settings: Settings) -> int:
    """Print one line per finding; the number of problems found."""
    env = dict(os.environ)
    problems = 0

    def line(ok: bool, text: str, fix: str | None = None) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"{'ok ' if ok else 'FIX'}  {text}" + (f"\n     -> {fix}" if fix and not ok else ""))

    try:
        tools = toolchain.probe(env)
    except ComposecacheError as exc:  # no docker CLI (or no compose behind a shim): nothing else to ask
        line(False, f"docker: {exc.message}", exc.hint or "install the Docker CLI")
        return problems
    line(True, f"docker CLI: {tools.docker}")
    line(
        tools.compose_version is not None,
        f"compose: {' '.join(tools.compose)} ({tools.compose_version_text or 'unknown'})",
        "install the docker compose plugin (Compose v2)",
    )
    line(
        tools.buildx_available,
        "buildx plugin" + (" found" if tools.buildx_available else " missing"),
        "install docker-buildx: plain `docker build` then cannot use the cache",
    )
    builder = tools.builder
    if builder.error:
        line(False, f"builder: {builder.error}", "is the daemon running? check DOCKER_HOST")
    else:
        store = {True: "containerd image store", False: "classic image store", None: "image store unknown"}
        line(builder.can_export, f"builder driver: {builder.driver or 'unknown'} ({store[builder.containerd_store]})")
    if builder.driver == "docker":
        import shutil

        if shutil.which("unpigz", path=env.get("PATH")) is None:
            # Not a problem, a speed-up: containerd runs unpigz for gzip layers when it is on its PATH.
            print(
                "tip  unpigz is not on PATH: install pigz; containerd then decompresses layers with it "
                "(cache imports, pulls, docker load: the warm flagship's extraction took 7.6 s instead of 13.5 s)"
            )
    plan = versions.plan_for(tools.compose_version, builder, settings.strategy)
    line(
        plan.export and plan.strategy != "passthrough",
        f"compose strategy: {plan.strategy}, "
        f"{'import and export' if plan.export else 'import only'}" + (f" (child env {plan.env})" if plan.env else ""),
        "; ".join(plan.doctor_hints) or None,
    )
    cache_dir = settings.cache_dir
    existing = cache_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the real run creates the missing part
    writable = os.access(existing, os.W_OK)
    line(
        writable and not settings.read_only,
        f"cache directory: {cache_dir} (namespace {settings.namespace}"
        f"{', read-only' if settings.read_only or not writable else ''})",
        "mount the shared cache directory read-write, or set COMPOSECACHE_DIR",
    )
    for ok, text, fix in _remote_findings(settings, builder, env):
        line(ok, text, fix)
    for ok, text, fix in _project_findings(tools, env):
        line(ok, text, fix)
    from composecache.shim import install as shim

    for ok, text, fix in shim.doctor_findings(env):
        line(ok, text, fix)
    return problems


def _remote_findings(
    settings: Settings, builder: toolchain.Builder, env: dict[str, str]
) -> list[tuple[bool, str, str | None]]:
    """The registry tier (--remote / COMPOSECACHE_REMOTE): reachable, writable, usable by this builder."""
    if not settings.remote:
        return []
    from composecache.errors import UsageError
    from composecache.remote import report

    try:
        remote = report.configured(settings)
    except UsageError as exc:
        return [(False, f"remote: {exc.message}", exc.hint)]
    assert remote is not None
    result = report.check(remote, env)
    mode = (
        "plain HTTP" if remote.scheme == "http" else "HTTPS" + (" (certificate not checked)" if remote.insecure else "")
    )
    findings: list[tuple[bool, str, str | None]] = []
    if not result.reachable:
        findings.append(
            (
                False,
                f"remote {remote.name} ({mode}): unreachable: {result.detail}",
                "start the registry or fix COMPOSECACHE_REMOTE; builds go on with the local cache only",
            )
        )
    else:
        writable = result.writable and not settings.read_only
        state = result.status if not settings.read_only else "read-only (--read-only: never pushes)"
        findings.append(
            (
                writable or settings.read_only,
                f"remote {remote.name} ({mode}): {state}: {result.detail}",
                "give this session push rights (docker login), or run it with --read-only",
            )
        )
    if builder.driver == "docker" and builder.containerd_store is False:
        findings.append(
            (
                False,
                "remote: the docker driver with the classic image store imports from the registry "
                "but exports nothing, so nothing is pushed",
                "turn on the containerd image store",
            )
        )
    elif builder.driver not in {None, "docker"}:
        findings.append(
            (
                remote.scheme == "https" and not remote.loopback,
                f"remote: builder driver {builder.driver}: BuildKit runs in its own container; it must reach "
                f"{remote.registry} itself (127.0.0.1 is the container's own loopback) and a plain-HTTP "
                "registry needs `http = true` for it in buildkitd.toml",
                "give the registry a name and port the builder container reaches",
            )
        )
    return findings


def _project_findings(tools: toolchain.Toolchain, env: dict[str, str]) -> list[tuple[bool, str, str | None]]:
    """x-composecache settings of the compose project in this directory, if there is one."""
    from pathlib import Path

    from composecache.compose import project
    from composecache.compose.files import find_files

    files = find_files([], None, [], env, Path.cwd())
    if not files.files:
        return []
    config = runner.safe_capture([*tools.compose, *[a for f in files.files for a in ("-f", f)], "config"], env)
    if config.returncode != 0:
        return [
            (
                False,
                f"compose project {files.project_dir}: compose cannot read it: "
                f"{(config.stderr.strip().splitlines() or ['?'])[-1]}",
                "fix the compose file",
            )
        ]
    try:
        model = project.model_from_config_output(config.stdout)
    except project.ModelError as exc:
        return [(False, f"compose project {files.project_dir}: {exc.message}", None)]
    findings: list[tuple[bool, str, str | None]] = []
    building = [service for service in model.services.values() if service.builds]
    for service in building:
        _, errors = project.service_settings(service)
        where = project.file_defining(files.files, service.name, Path.cwd()) or str(files.project_dir)
        findings += [(False, f"{where}: {error}", "see schemas/x-composecache.schema.json") for error in errors]
    if not findings:
        findings.append(
            (
                True,
                f"compose project {files.project_dir}: {len(building)} service(s) build, x-composecache settings valid",
                None,
            )
        )
    return findings
