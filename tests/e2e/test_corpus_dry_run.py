"""`composecache --dry-run build` on real-world compose files (../shared/corpus), on both legs (issue 4).

No daemon is needed: `docker compose config` reads the files; the probes of the
builder fail and composecache falls back to "unknown builder", as it must.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from composecache import schema, yaml
from tests.e2e import harness

CORPUS_FILES = (
    sorted(p for p in harness.CORPUS.rglob("*") if p.suffix in {".yaml", ".yml"}) if harness.CORPUS.is_dir() else []
)


def _leg_env(leg: str, cache_dir: Path) -> dict[str, str]:
    prefix = Path(os.environ.get("COMPOSECACHE_TOOLCHAIN", "/opt/composecache-toolchain")) / leg
    if not (prefix / "bin" / "docker").exists():
        harness.missing(f"the {leg} toolchain is not installed", f"run scripts/install-toolchain --leg {leg}")
    env = dict(os.environ)
    env.update(
        PATH=f"{prefix / 'bin'}:{env['PATH']}",
        DOCKER_CONFIG=str(prefix / "docker-config"),
        DOCKER_HOST="unix:///nonexistent/docker.sock",
        COMPOSECACHE_DIR=str(cache_dir),
        NO_COLOR="1",
    )
    return env


def _override_from(stdout: str) -> object:
    lines = stdout.split("# override file", 1)[1].split("# command:", 1)[0].splitlines()[1:]
    return yaml.load("\n".join(line[4:] for line in lines))


@pytest.mark.skipif(not harness.CORPUS.is_dir(), reason="../shared/corpus is not beside this checkout")
@pytest.mark.parametrize("leg", ["stable", "latest"])
def test_dry_run_on_every_corpus_file(leg: str, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    env = _leg_env(leg, cache_dir)
    assert CORPUS_FILES, "the corpus has no compose files"
    accepted = 0
    for path in CORPUS_FILES:
        plain = subprocess.run(
            ["docker", "compose", "-f", path.name, "config", "-q"],
            cwd=path.parent,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        dry = subprocess.run(
            [sys.executable, "-m", "composecache", "--dry-run", "-f", path.name, "build"],
            cwd=path.parent,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        where = f"{leg}: {path}\n--- stdout\n{dry.stdout}\n--- stderr\n{dry.stderr}"
        assert "Traceback" not in dry.stderr + dry.stdout, where
        if plain.returncode != 0:
            assert dry.returncode != 0, where
            first_error_line = plain.stderr.strip().splitlines()[-1]
            assert first_error_line in dry.stderr, where
            continue
        accepted += 1
        assert dry.returncode == 0, where
        override = _override_from(dry.stdout)
        assert schema.errors(override, "override") == [], where
        if not override["services"]:  # type: ignore[index]
            continue
        assert "+    cache_to:" in dry.stdout or "+  cache_to:" in dry.stdout, where
        override_path = tmp_path / "override.yaml"
        override_path.write_text(
            dry.stdout.split("# override file", 1)[1].split("# command:", 1)[0].split("\n", 1)[1].replace("#   ", "")
        )
        merged = subprocess.run(
            ["docker", "compose", "-f", path.name, "-f", str(override_path), "config"],
            cwd=path.parent,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert merged.returncode == 0, where + merged.stderr
        assert "cache_to" in merged.stdout
    assert accepted >= 20
    assert not any(cache_dir.iterdir()), "a dry run wrote to the cache"
