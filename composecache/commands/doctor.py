"""`composecache doctor`: what is detected, and what to fix, one line each."""

from __future__ import annotations

import os

from composecache import toolchain
from composecache.compose import versions
from composecache.output import Output
from composecache.settings import Settings


def main(args: list[str], settings: Settings, output: Output) -> int:
    if args and args[0] in {"-h", "--help"}:
        print("Usage: composecache doctor\n\nCheck the docker/compose/buildx toolchain, the builder and the cache "
              "directory; print one line per finding and what to fix.")  # fmt: skip
        return 0
    env = dict(os.environ)
    problems = 0

    def line(ok: bool, text: str, fix: str | None = None) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"{'ok ' if ok else 'FIX'}  {text}" + (f"\n     -> {fix}" if fix and not ok else ""))

    try:
        tools = toolchain.probe(env)
    except Exception as exc:
        line(False, f"docker: {exc}", "install the Docker CLI")
        return 1
    line(True, f"docker CLI: {tools.docker}")
    line(tools.compose_version is not None, f"compose: {' '.join(tools.compose)} ({tools.compose_version_text or 'unknown'})",
         "install the docker compose plugin (Compose v2)")  # fmt: skip
    line(tools.buildx_available, "buildx plugin" + (" found" if tools.buildx_available else " missing"),
         "install docker-buildx: plain `docker build` then cannot use the cache")  # fmt: skip
    builder = tools.builder
    if builder.error:
        line(False, f"builder: {builder.error}", "is the daemon running? check DOCKER_HOST")
    else:
        store = {True: "containerd image store", False: "classic image store", None: "image store unknown"}
        line(builder.can_export, f"builder driver: {builder.driver or 'unknown'} ({store[builder.containerd_store]})")
    plan = versions.plan_for(tools.compose_version, builder, settings.strategy)
    line(plan.export and plan.strategy != "passthrough", f"compose strategy: {plan.strategy}, "
         f"{'import and export' if plan.export else 'import only'}"
         + (f" (child env {plan.env})" if plan.env else ""), "; ".join(plan.doctor_hints) or None)  # fmt: skip
    cache_dir = settings.cache_dir
    writable = os.access(cache_dir, os.W_OK) if cache_dir.exists() else os.access(cache_dir.parent, os.W_OK)
    line(writable and not settings.read_only, f"cache directory: {cache_dir} (namespace {settings.namespace}"
         f"{', read-only' if settings.read_only or not writable else ''})",
         "mount the shared cache directory read-write, or set COMPOSECACHE_DIR")  # fmt: skip
    return 1 if problems else 0
