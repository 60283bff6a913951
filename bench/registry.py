"""The bench's loopback registry: scripts/registrylib.py (one implementation for tests, bench and demos).

Real stacks start `FROM` a registry image; the machine reaches no registry, so
the bench runs its own on 127.0.0.1 with its own config and storage in a temp
dir, and stops it by pid afterwards (the remote row also uses it as the shared
cache tier between hosts: bench/remote.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import registrylib

REGISTRY_BIN = registrylib.REGISTRY_BIN
Registry = registrylib.Registry
start = registrylib.start
running = registrylib.started


def stop(registry: Registry) -> None:
    """Stop exactly the registry we started (by pid) and remove its storage."""
    registrylib.stop(registry, purge=True)
