"""What the fault suite (test_faults.py) and the attack suite (test_security.py) share.

- `Lab`: one test's project copy, cache directory and private TMPDIR, with `cc()` (composecache as
  a user runs it), `plain()` (the same compose command without composecache), `cache()` and
  `verify()`; its fixture checks afterwards that no staging directory, temporary override
  directory or mount is left behind.
- `tree_state()`: every entry under a directory with its type, mode, size, mtime and content hash,
  to prove that nothing changed (or to say exactly what did).
- mounts and attributes that always come off again: `read_only_bind()`, `tmpfs()`, `immutable()`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e import harness

FIXTURE = "faults"


def _no_git_scope(directory: str, service: str, context: str) -> str:
    """The scope of a service of a project that is no git checkout: the directory's name, a digest of
    where the build sits in the project (compose/scopes.py), the service."""
    from composecache.compose.project import ServiceModel

    build = {"context": f"/p/{directory}/{context}", "dockerfile": "Dockerfile"}  # as `compose config` prints it
    return f"{directory}-{ServiceModel(service, build, None).shape_digest(Path('/p', directory))}/{service}"


SCOPE = _no_git_scope("faults", "app", "app")  # the `app` service of fixtures/faults copied to `faults`


@dataclass
class Lab:
    tmp: Path
    rootfs_tar: Path
    cache_dir: Path
    # What a test may leave on purpose (a SIGKILLed composecache cannot clean up after itself).
    staging_may_remain: bool = False
    override_dir_may_remain: bool = False

    @property
    def tmpdir(self) -> Path:
        """TMPDIR for composecache and everything it runs: whatever they leave stays in the test."""
        path = self.tmp / "tmpdir"
        path.mkdir(exist_ok=True)
        return path

    def project(self, fixture: str = FIXTURE, name: str | None = None) -> Path:
        dest = self.tmp / (name or fixture)
        if not dest.exists():
            harness.copy_fixture(fixture, dest, self.rootfs_tar)
        return dest

    def env(self, cache_dir: Path | None = None, **extra: str) -> dict[str, str]:
        env = {"COMPOSECACHE_DIR": str(cache_dir or self.cache_dir), "TMPDIR": str(self.tmpdir), "NO_COLOR": "1"}
        env.update(extra)
        return env

    def cc(self, session: harness.Session, *args: str, cwd: Path | None = None, cache_dir: Path | None = None,
           check: bool = False, timeout: float = 300, env: Mapping[str, str] | None = None,
           **extra: str) -> harness.Result:  # fmt: skip
        """`composecache ARGS...` in the project directory (exit code unchecked unless check); env and extra: more
        environment."""
        return harness.composecache(session, *args, cwd=cwd or self.project(), check=check, timeout=timeout,
                                    extra_env=self.env(cache_dir, **{**(env or {}), **extra}))  # fmt: skip

    def plain(self, session: harness.Session, *args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None,
              **extra: str) -> harness.Result:  # fmt: skip
        """`docker compose ARGS...` as the user would run it without composecache."""
        return harness.docker(session, "compose", *args, cwd=cwd or self.project(), check=False,
                              extra_env={"TMPDIR": str(self.tmpdir), **(env or {}), **extra})  # fmt: skip

    def cache(self, session: harness.Session, *args: str, cache_dir: Path | None = None,
              env: Mapping[str, str] | None = None) -> harness.Result:  # fmt: skip
        return self.cc(session, "cache", *args, cwd=self.tmp, cache_dir=cache_dir, env=env)

    def verify(self, session: harness.Session, *, deep: bool = False, cache_dir: Path | None = None,
               env: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        result = self.cache(session, "verify", "--json", *(["--deep"] if deep else []), cache_dir=cache_dir, env=env)
        assert result.returncode in {0, 1}, result.output
        return result.returncode, json.loads(result.stdout)

    def assert_sound(self, session: harness.Session, *, cache_dir: Path | None = None) -> None:
        code, report = self.verify(session, deep=True, cache_dir=cache_dir)
        assert code == 0 and report["sound"], report


def warnings(result: harness.Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("composecache: warning:")]


def summary(result: harness.Result) -> dict[str, str]:
    """composecache's one line per service: {service: "scope X: import from ...; exported"}."""
    found = {}
    for line in result.stderr.splitlines():
        if line.startswith("composecache: ") and ": scope " in line:
            service, rest = line[len("composecache: ") :].split(": ", 1)
            found[service] = rest
    return found


def namespace_roots(cache_dir: Path) -> list[Path]:
    ns = cache_dir / "ns"
    return sorted(ns.iterdir()) if ns.is_dir() else []


def store_root(cache_dir: Path) -> Path:
    roots = namespace_roots(cache_dir)
    assert len(roots) == 1, roots
    return roots[0]


def scope_dirs(cache_dir: Path) -> list[Path]:
    return sorted(p for root in namespace_roots(cache_dir) for p in (root / "scopes").iterdir())


def staging_leftovers(cache_dir: Path) -> list[Path]:
    return sorted(p for root in namespace_roots(cache_dir) if (root / "staging").is_dir()
                  for p in (root / "staging").iterdir())  # fmt: skip


def manifest_of(scope_dir: Path) -> tuple[str, dict[str, Any]]:
    """(the hex digest of the scope's cache manifest, the manifest)."""
    index = json.loads((scope_dir / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    return digest, json.loads((scope_dir / "blobs" / "sha256" / digest).read_bytes())


def layer_descriptors(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    entries = manifest.get("manifests") or manifest.get("layers") or []
    return [d for d in entries if "layer" in d["mediaType"]]


def blob_path(cache_dir: Path, digest: str) -> Path:
    return store_root(cache_dir) / "blobs" / "sha256" / digest.split(":", 1)[-1]


def _digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def tree_state(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `root` (root included): kind, mode, size, mtime, content or link target.

    Symlinks are recorded, never followed.  Access times are left out (reading is allowed).
    """
    found: dict[str, tuple[object, ...]] = {}
    if not os.path.lexists(root):
        return found
    paths = [root]
    if root.is_dir() and not root.is_symlink():
        paths += sorted(root.rglob("*"))
    for path in paths:
        info = path.lstat()
        key = str(path.relative_to(root))
        mode = stat.S_IMODE(info.st_mode)
        if stat.S_ISLNK(info.st_mode):
            found[key] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[key] = ("dir", mode, info.st_mtime_ns)
        else:
            found[key] = ("file", mode, info.st_size, info.st_mtime_ns, _digest(path))
    return found


def changed(before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]) -> list[str]:
    """What differs between two tree_state()s, one line each."""
    lines = [f"added {key}" for key in sorted(after.keys() - before.keys())]
    lines += [f"removed {key}" for key in sorted(before.keys() - after.keys())]
    lines += [f"changed {key}: {before[key]} -> {after[key]}" for key in sorted(before.keys() & after.keys())
              if before[key] != after[key]]  # fmt: skip
    return lines


def copy_store(template: Path, dest: Path) -> Path:
    """A private copy of a populated store (modes, times and the relative blobs links kept)."""
    shutil.copytree(template, dest, symlinks=True, dirs_exist_ok=True)
    return dest


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == target for line in handle)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    with open("/proc/self/mountinfo") as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(prefix)]


def _umount(path: Path) -> None:
    if _mounted(path):
        result = subprocess.run(["umount", str(path)], capture_output=True, text=True, check=False)
        if result.returncode != 0:  # busy (a process still has a file open there): detach it
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def read_only_bind(path: Path) -> Iterator[Path]:
    """`path` remounted read-only in place (EROFS for every writer, root included)."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs at `path` (ENOSPC once it is full); always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        _umount(path)


@contextlib.contextmanager
def immutable(path: Path, *, recursive: bool) -> Iterator[Path]:
    """chattr +i: nobody, root included, may create, change or remove entries (EPERM)."""

    def chattr(flag: str) -> None:
        # Symlinks take no attributes (and chattr -R stops at them): every other entry, one by one.
        depth = [] if recursive else ["-maxdepth", "0"]
        subprocess.run(["find", str(path), *depth, "!", "-type", "l", "-exec", "chattr", flag, "{}", "+"],
                       check=flag == "+i")  # fmt: skip

    chattr("+i")
    try:
        yield path
    finally:
        chattr("-i")


def python_composecache(session: harness.Session, env: dict[str, str], code: str, *args: str,
                        cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run composecache's own main() in a Python process that first runs `code` (to inject a fault)."""
    full = session.env()
    full["BUILDKIT_PROGRESS"] = "plain"
    full.update(env)
    program = f"{code}\nimport sys\nfrom composecache.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", program, *args], env=full, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def leftovers_after(lab: Lab) -> list[str]:
    """What a test must not leave behind: staging dirs, override dirs in TMPDIR, mounts."""
    problems = []
    if not lab.staging_may_remain:
        problems += [f"staging left: {p}" for p in staging_leftovers(lab.cache_dir)]
    for entry in lab.tmpdir.iterdir():
        if entry.name.startswith("composecache-"):
            if not lab.override_dir_may_remain:
                problems.append(f"temporary dir left: {entry}")
            elif stat.S_IMODE(entry.stat().st_mode) != 0o700:
                problems.append(f"temporary dir left, and not private: {entry}")
    problems += [f"mount left: {m}" for m in mounts_under(lab.tmp)]
    return problems
