"""Builds driven through the store API by hand (the compose/docker front-ends do this for users).

prepare_import -> prepare_export -> `docker buildx build --cache-from .. --cache-to ..` in a
session -> publish: the same lifecycle cached_build.py runs, minus the front-end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from composecache.store import PublishOutcome, Store
from tests.e2e import harness

DOCKERFILE = """\
FROM scratch
ADD rootfs.tar /
RUN echo {label} > /label && dd if=/dev/urandom of=/payload bs=1k count={payload_kb} 2>/dev/null
RUN sha256sum /payload > /payload.sha256 && cat /label >> /payload.sha256
CMD ["cat", "/label"]
"""


def make_context(dest: Path, rootfs_tar: Path, label: str, payload_kb: int = 256) -> Path:
    """A build context whose RUN layers depend on `label` (a new label means new layers)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "Dockerfile").write_text(DOCKERFILE.format(label=label, payload_kb=payload_kb))
    target = dest / "rootfs.tar"
    if not target.exists():
        try:
            target.hardlink_to(rootfs_tar)
        except OSError:
            shutil.copy2(rootfs_tar, target)
    return dest


@dataclass
class Build:
    session: str
    scope: str
    returncode: int
    log: str
    imported: bool
    outcome: PublishOutcome | None
    seconds: float

    @property
    def steps(self) -> dict[str, bool]:
        return harness.run_steps(self.log)

    @property
    def fully_cached(self) -> bool:
        steps = self.steps
        return bool(steps) and all(steps.values())

    def describe(self) -> str:
        outcome = "-" if self.outcome is None else ("published" if self.outcome.published else self.outcome.reason)
        cached = sum(self.steps.values())
        return (
            f"{self.session} {self.scope}: rc={self.returncode} imported={self.imported} "
            f"RUN cached {cached}/{len(self.steps)} {outcome} {self.seconds:.1f}s"
        )


def build(
    session: harness.Session,
    store: Store,
    scope: str,
    context: Path,
    tag: str,
    *,
    export: bool = True,
    leg_args: Sequence[str] = (),
) -> Build:
    """One build through the store; never raises for a failed build (the caller asserts)."""
    started = time.monotonic()
    spec = store.prepare_import(scope)
    staging = store.prepare_export(scope) if export else None
    args = ["buildx", "build", "--progress", "plain", "--network", "none", "-t", tag, *leg_args]
    if spec is not None:
        args += ["--cache-from", spec.cache_from]
    if staging is not None:
        args += ["--cache-to", staging.cache_to]
    try:
        result = harness.docker(session, *args, str(context), check=False, timeout=600)
        outcome = store.publish(staging) if staging is not None else None
    finally:
        if staging is not None:
            store.discard(staging)
        store.release_import(spec)
    return Build(
        session.name, scope, result.returncode, result.output, spec is not None, outcome, time.monotonic() - started
    )


def build_all(jobs: Sequence[Callable[[], Build]]) -> list[Build]:
    """Start every job at once (one thread each) and wait for all of them."""
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [future.result() for future in futures]


def assert_built(builds: Sequence[Build]) -> None:
    failed = [b for b in builds if b.returncode != 0]
    assert not failed, "builds failed:\n" + "\n\n".join(f"{b.describe()}\n{b.log[-3000:]}" for b in failed)


def cache_cli(session: harness.Session, cache_dir: Path, *args: str) -> harness.Result:
    """`composecache --cache-dir DIR cache ARGS...` as a user runs it (exit code unchecked)."""
    return harness.composecache(session, "--cache-dir", str(cache_dir), "cache", *args, check=False)


def stats_json(session: harness.Session, cache_dir: Path) -> dict[str, object]:
    result = cache_cli(session, cache_dir, "stats", "--json")
    assert result.returncode == 0, result.report
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def report(title: str, lines: Sequence[str]) -> None:
    """Numbers worth keeping: printed (pytest -s shows them) and appended to $COMPOSECACHE_E2E_REPORT."""
    text = f"== {title}\n" + "\n".join(lines) + "\n"
    print(text)
    target = os.environ.get("COMPOSECACHE_E2E_REPORT")
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(text)
