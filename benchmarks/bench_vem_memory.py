"""Peak memory of convert + denoise on a uint8 TIFF stack: 4 GiB against 0.5 GiB.

Writes two BigTIFF stacks of 2048 x 2048 uint8 sections (128 sections = 0.5 GiB, 1024 sections =
4 GiB; a fast-scan-like texture, so compression does not make them trivial), then runs, each in
its own process, ``scnet-dask convert --dtype source --voxel-size 500,40,40`` and
``scnet-dask denoise`` (``--method gaussian --sigma 1 --sigma-z 0`` by default: the same
out-of-core tiling, reading and writing as the trained methods, at a CPU-friendly cost; pass
``--denoise-args`` for another method), and reports each step's peak RSS (``/usr/bin/time``'s
maximum resident set size) and the ratio 4 GiB / 0.5 GiB. Goal: ratio <= 1.3. Both stacks are at
least one chunk (128 sections) deep, so both runs use the same chunks: a stack thinner than a
chunk gets thinner chunks and less memory per task (the first run of this script, 32 vs 256
sections of 4096², measured that effect: ratio 3.2, see the README).

    python benchmarks/bench_vem_memory.py [--work DIR] [--sections 32,256]
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import tifffile

EDGE = 2048


def write_stack(path: Path, sections: int) -> None:
    if path.exists():
        return
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (EDGE, EDGE), dtype=np.uint8)

    def pages():  # type: ignore[no-untyped-def]
        for i in range(sections):
            noise = rng.integers(0, 40, (EDGE, EDGE), dtype=np.uint8)
            yield np.roll(base, i, axis=1) + noise

    tifffile.imwrite(path, pages(), shape=(sections, EDGE, EDGE), dtype=np.uint8, bigtiff=True,
                     photometric="minisblack")  # fmt: skip


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``cmd``."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{res.stderr[-2000:]}")
    kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))  # type: ignore[union-attr]
    return kib / 1024, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("bench_vem_memory"))
    ap.add_argument("--sections", default="128,1024")
    ap.add_argument("--denoise-args", default="--method gaussian --sigma 1 --sigma-z 0")
    ap.add_argument("--keep", action="store_true", help="keep the stacks and outputs")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (int(s) for s in a.sections.split(",")):
        tif = a.work / f"stack_{n}.tif"
        write_stack(tif, n)
        z = a.work / f"stack_{n}.zarr"
        out = a.work / f"den_{n}.zarr"
        gib = n * EDGE * EDGE / 2**30
        c_rss, c_s = peak_rss(["scnet-dask", "convert", str(tif), str(z), "--dtype", "source",
                               "--voxel-size", "500,40,40", "--overwrite"])  # fmt: skip
        d_rss, d_s = peak_rss(["scnet-dask", "denoise", str(z), str(out), "--overwrite",
                               *shlex.split(a.denoise_args)])  # fmt: skip
        rows.append((n, gib, c_rss, c_s, d_rss, d_s))
        rate = gib * 1024 / c_s
        print(f"{n} sections ({gib:.2f} GiB): convert {c_rss:.0f} MiB {c_s:.0f} s ({rate:.0f} "
              f"MiB/s), denoise {d_rss:.0f} MiB {d_s:.0f} s ({n / d_s:.2f} sections/s)", flush=True)
        if not a.keep:
            for p in (tif, z, out):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    lines = ["| stack | GiB | convert peak RSS (MiB) | convert (s) | denoise peak RSS (MiB) | "
             "denoise (s) | sections/s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for n, gib, c_rss, c_s, d_rss, d_s in rows:
        lines.append(f"| {n} x {EDGE} x {EDGE} | {gib:.2f} | {c_rss:.0f} | {c_s:.0f} | "
                     f"{d_rss:.0f} | {d_s:.0f} | {n / d_s:.2f} |")  # fmt: skip
    if len(rows) >= 2:
        lines.append("")
        lines.append(f"ratio largest / smallest: convert {rows[-1][2] / rows[0][2]:.2f}, "
                     f"denoise {rows[-1][4] / rows[0][4]:.2f} (goal <= 1.3)")
    print("\n".join(lines))
    (a.work / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
