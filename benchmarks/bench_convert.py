"""Conversion throughput and peak memory: MRC → OME-Zarr, against ``cp`` of the same file.

Builds float32 MRC test files itself (0.5 GiB and 4 GiB by default), converts each with
``scnet-dask convert`` in a child process, and reports MiB/s, the peak RSS of the whole process
tree (sampled with psutil) and the ratio of our conversion time to ``cp``.

    python benchmarks/bench_convert.py [--sizes-gib 0.5 4] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import psutil


def make_mrc(path: Path, gib: float, seed: int = 0) -> tuple[int, int, int]:
    """Write a float32 noisy-tomogram-like MRC of about ``gib`` GiB, slab by slab."""
    ny = nx = 1024
    nz = max(2, int(round(gib * 2**30 / (ny * nx * 4))))
    rng = np.random.default_rng(seed)
    with mrcfile.new_mmap(path, shape=(nz, ny, nx), mrc_mode=2, overwrite=True) as m:
        m.voxel_size = 8.0
        yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
        base = np.sin(xx / 17) * np.cos(yy / 23)
        for z0 in range(0, nz, 32):
            z1 = min(z0 + 32, nz)
            m.data[z0:z1] = base + rng.standard_normal((z1 - z0, ny, nx), dtype=np.float32)
    return nz, ny, nx


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of the process tree in MiB)."""
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed with exit code {proc.returncode}")
    return wall, peak / 2**20


def drop_cache(path: Path) -> None:
    """Best effort: evict ``path`` from the page cache so both runs read from disk alike."""
    try:
        import os

        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
    except (OSError, AttributeError):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gib", type=float, nargs="+", default=[0.5, 4.0])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_convert_"))
    work.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("scnet-dask") or sys.executable
    prefix = [exe] if exe.endswith("scnet-dask") else [exe, "-m", "scnet_dask.cli"]
    print(
        f"{'size':>8} {'shape (z,y,x)':>20} {'convert s':>10} {'MiB/s':>8} {'cp s':>7} "
        f"{'ratio':>6} {'peak RSS MiB':>12} {'stored/raw':>10}"
    )
    try:
        for gib in args.sizes_gib:
            src = work / f"in_{gib:g}.mrc"
            shape = make_mrc(src, gib)
            size_mib = src.stat().st_size / 2**20
            drop_cache(src)
            t_cp, _ = run_measured(["cp", str(src), str(work / "copy.mrc")])
            (work / "copy.mrc").unlink()
            drop_cache(src)
            out = work / f"out_{gib:g}.zarr"
            t_conv, peak = run_measured([*prefix, "convert", str(src), str(out), "--overwrite"])
            stored = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
            print(
                f"{gib:>7g}G {str(shape):>20} {t_conv:>10.1f} {size_mib / t_conv:>8.1f} "
                f"{t_cp:>7.2f} {t_conv / t_cp:>6.1f} {peak:>12.0f} {stored / size_mib:>10.3f}",
                flush=True,
            )
            src.unlink()
            shutil.rmtree(out)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
