"""The bench's own logic: the phase breakdown of a log, counting a saved image's layers, the XL report."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bench import report, xl
from bench.harness import BenchError, Timed, breakdown

LOG = """\
[   0.40] composecache: debug: the compose project is unchanged since composecache last read it (memo)
[   2.10] composecache: debug: pool: 27 of 28 layers registered (1 already there), 28 blobs linked, in 1.64s
[   2.12] composecache: debug: seeded 0 of 14 layer blobs (0 MB; 14 already there) into the content store in 0.3s
[   2.20] composecache: debug: running docker compose -p flagship-xl up --build -d
[   3.00] #0 building with "default" instance using docker driver
[   4.00] #29 extracting sha256:aaaa 1.5s done
[   5.00] #29 extracting sha256:bbbb 2.0s done
[   9.00] #54 writing cache manifest sha256:cccc done
[   9.50]  Container flagship-xl-api-1  Started
[  10.00]  Container flagship-xl-ui-1  Started
[  10.20] composecache: api: scope flagship-xl/api: import from flagship-xl/api; exported
[  10.90] composecache: debug: the wrapped command ran 8000.0 ms
"""


def _timed(tmp_path: Path, text: str, seconds: float) -> Timed:
    log = tmp_path / "run.log"
    log.write_text(text)
    output = "".join(line.split("] ", 1)[1] + "\n" for line in text.splitlines())
    return Timed(seconds=seconds, log=log, output=output, load_before=1.0, load_after=1.0)


def test_breakdown_finds_every_phase(tmp_path: Path) -> None:
    phases = breakdown(_timed(tmp_path, LOG, 11.0))
    assert phases["composecache_own_s"] == 3.0
    assert phases["before_compose_s"] == 2.2
    assert phases["after_compose_s"] == 0.8
    assert phases["pool_s"] == 1.64
    assert phases["pool_fill_s"] is None
    assert (phases["pool_layers_registered"], phases["pool_layers"]) == (27, 28)
    assert phases["seeding_s"] == 0.3
    assert phases["compose_s"] == 8.0
    assert phases["buildkit_s"] == 6.8  # 2.20 (compose started) -> 9.00 (the build's last line)
    assert (phases["extraction_s"], phases["extracted_layers"]) == (3.5, 2)
    assert phases["container_start_s"] == 1.0


def test_breakdown_reads_a_pool_fill(tmp_path: Path) -> None:
    text = ("[   9.00] composecache: debug: pool: 28 of 28 layers registered (0 already there, filled 28 (191 MB) "
            "in 8.8s), 28 blobs linked, in 12.71s\n")  # fmt: skip
    phases = breakdown(_timed(tmp_path, text, 13.0))
    assert (phases["pool_s"], phases["pool_fill_s"]) == (12.71, 8.8)


def test_breakdown_without_composecache_lines(tmp_path: Path) -> None:
    phases = breakdown(_timed(tmp_path, "[   1.00] #1 DONE 0.1s\n", 2.0))
    assert phases["composecache_own_s"] is None and phases["pool_s"] is None and phases["buildkit_s"] is None
    assert phases["extracted_layers"] == 0


def _layer(files: dict[str, bytes], compress: bool) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as layer:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            layer.addfile(info, io.BytesIO(data))
        directory = tarfile.TarInfo("d")
        directory.type = tarfile.DIRTYPE
        layer.addfile(directory)
    return gzip.compress(raw.getvalue()) if compress else raw.getvalue()


def _saved(path: Path, images: dict[str, list[str]], blobs: dict[str, bytes]) -> Path:
    manifest = [{"Config": f"blobs/sha256/config-{n}", "RepoTags": [tag], "Layers": layers}
                for n, (tag, layers) in enumerate(images.items())]  # fmt: skip
    with tarfile.open(path, "w") as out:
        for name, data in {"manifest.json": json.dumps(manifest).encode(), **blobs}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return path


def test_image_contents_counts_unique_layers_once(tmp_path: Path) -> None:
    base = _layer({"a": b"x" * 100, "b": b"y" * 50}, compress=True)
    top = _layer({"c": b"z" * 1000}, compress=False)
    other = _layer({"e": b"w" * 7}, compress=True)
    saved = _saved(tmp_path / "images.tar",
                   {"one:dev": ["blobs/sha256/base", "blobs/sha256/top"], "two:dev": ["blobs/sha256/base",
                                                                                    "blobs/sha256/other"]},
                   {"blobs/sha256/base": base, "blobs/sha256/top": top, "blobs/sha256/other": other})  # fmt: skip
    contents = xl.image_contents(saved)
    assert contents["bytes_uncompressed"] == 1157
    assert contents["files"] == 4  # regular files only: the directories are not counted
    assert contents["unique_layers"] == 3
    assert contents["bytes_uncompressed_sum_of_images"] == 1150 + 157
    assert contents["images"]["two:dev"] == {"layers": 2, "bytes": 157, "files": 3}


def test_image_contents_without_manifest(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with pytest.raises(BenchError, match=r"no manifest\.json"):
        xl.image_contents(tmp_path / "empty.tar")


def _xl_section(pool_s: float, nopool_s: float, same_s: float, growth: int, size: int) -> dict[str, Any]:
    phases = {"composecache_own_s": 1.0, "pool_s": 0.5, "extracted_layers": 0}
    out: dict[str, Any] = {
        "scale": 1.0,
        "pool_in_checkout": True,
        "cold": {"seconds": 300.0},
        "contents": {"bytes_uncompressed": size, "files": 310_000, "unique_layers": 28,
                     "bytes_uncompressed_sum_of_images": size + 1, "images": {f"i{n}": {} for n in range(5)}},
        "store": {"bytes": 4 * 10**9},
        "images_tar_bytes": 4 * 10**9,
        "warm_new_session": {
            "pool": {"runs_s": [pool_s], "median_s": pool_s,
                     "detail": [{"seconds": pool_s, "phases": phases, "data_root_growth_bytes": growth}]},
            "nopool": {"runs_s": [nopool_s], "median_s": nopool_s,
                       "detail": [{"seconds": nopool_s, "phases": {**phases, "extracted_layers": 28},
                                   "data_root_growth_bytes": size * 2}]},
        },
        "warm_same_session": {"runs_s": [same_s], "median_s": same_s},
        "tarball": {"load_runs_s": [100.0], "up_runs_s": [2.0], "median_s": 102.0},
    }  # fmt: skip
    out.update(xl.headline(out))
    return out


def test_xl_targets_met_and_missed() -> None:
    met = _xl_section(pool_s=9.0, nopool_s=120.0, same_s=4.0, growth=10**8, size=6_600_000_000)
    assert all(met["targets"].values()), met["targets"]
    assert met["acceptance_size"] is True
    assert met["session_data_root_growth_nopool_bytes"] == 13_200_000_000
    missed = _xl_section(pool_s=25.0, nopool_s=120.0, same_s=4.0, growth=10**9, size=6_600_000_000)
    assert missed["targets"] == {"warm_new_session_under_20s": False, "goal_warm_new_session_at_most_10s": False,
                                 "goal_warm_new_session_at_most_3x_same_session": False,
                                 "data_root_growth_at_most_10pct_of_bytes": False}  # fmt: skip


def test_report_renders_an_xl_only_run(tmp_path: Path) -> None:
    results = {"started": "2026-12-01T10:00:00Z", "xl": _xl_section(9.0, 120.0, 4.0, 10**8, 6_600_000_000)}
    text = report.markdown(results, "run.png")
    assert "## XL stack (fixtures/flagship-xl)" in text
    assert "| `xl.warm_new_session_s` | fresh session, store warm (the pool: the default) | 9.00 s | 9.0 |" in text
    assert "| XL warm new session < 20 s (required) | 9.00 s | met |" in text
    assert "![flagship benchmark](run.png)" in text
    assert "cold_s" not in report.summary(results)
    assert report.summary(results)["xl"]["warm_new_session_nopool_s"] == 120.0
