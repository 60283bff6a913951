"""composecache with other cache export options, for bench/experiments.py only.

    BENCH_EXPORT_OPTIONS="compression=zstd,force-compression=true" python -m bench.cc_variant <args>

Runs composecache's own main() with the store's cache_to fields extended (or
`mode` replaced), so an experiment measures exactly the path users get, with
one export option changed, without adding a user-facing knob for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from composecache.cli import main
from composecache.store import store as store_module

EXTRA = dict(item.split("=", 1) for item in os.environ.get("BENCH_EXPORT_OPTIONS", "").split(",") if "=" in item)
_original = store_module.Store._export_fields


def _export_fields(self: store_module.Store, dest: str, mode: str,
                   options: Mapping[str, str] | None) -> list[tuple[str, str]]:  # fmt: skip
    merged = {**{k: v for k, v in EXTRA.items() if k != "mode"}, **(options or {})}
    return _original(self, dest, EXTRA.get("mode", mode), merged)


store_module.Store._export_fields = _export_fields  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
