"""Conversion throughput and peak memory: MRC → OME-Zarr, against ``cp`` of the same file.

Builds float32 MRC test files itself (0.5 GiB and 4 GiB by default), converts each with
``scnet-dask convert`` in a child process, and reports MiB/s, the peak RSS of the whole process
tree (sampled with psutil) and the ratio of our conversion time to ``cp``.

    python benchmarks/bench_convert.py [--sizes-gib 0.5 4] [--workdir DIR]
        [--baseline OLD_CHECKOUT] [--codecs]

``--baseline`` also converts each file with the package of another checkout (e.g. a
``git worktree`` of an older commit), in the same run, and prints the speed ratio.
``--codecs`` writes one in-memory 0.25 GiB float32 volume (noisy, like a tomogram) into Zarr with
each candidate Blosc codec (2 threads, 128³ chunks) and prints MiB/s and the stored fraction.
"""

from __future__ import annotations

import argparse
import os
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


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of the process tree in MiB)."""
    t0 = time.perf_counter()
    # run from the file's folder: ``python -m`` puts the working directory first on sys.path,
    # which would shadow a --baseline checkout given through PYTHONPATH
    cwd = next((Path(c).parent for c in cmd if c.endswith(".mrc")), None)
    proc = psutil.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd
    )
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


def codecs(work: Path) -> None:
    """Write speed and stored size of candidate codecs for noisy float32 data."""
    import dask
    import dask.array as da
    import zarr
    from zarr.codecs import BloscCodec

    rng = np.random.default_rng(0)
    vol = (np.sin(np.arange(1024, dtype=np.float32) / 17)[None, None, :]
           + rng.standard_normal((256, 256, 1024), dtype=np.float32))  # fmt: skip
    mib = vol.nbytes / 2**20
    print(f"codec test: {vol.shape} float32 ({mib:.0f} MiB) from RAM, 2 threads, 128³ chunks")
    for cname, level in (("zstd", 3), ("zstd", 1), ("lz4", 5), ("lz4", 1)):
        path = work / f"codec_{cname}{level}.zarr"
        arr = zarr.create_array(
            str(path), shape=vol.shape, chunks=(128,) * 3, dtype="f4", overwrite=True,
            compressors=[BloscCodec(cname=cname, clevel=level, shuffle="shuffle")],
        )  # fmt: skip
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=2):
            da.store(da.from_array(vol, chunks=128), arr, lock=False)  # type: ignore[arg-type]
        t = time.perf_counter() - t0
        stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
        print(f"  blosc {cname} level {level}: {mib / t:7.0f} MiB/s, stored/raw {stored / mib:.3f}")
        shutil.rmtree(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gib", type=float, nargs="+", default=[0.5, 4.0])
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to compare")
    ap.add_argument("--codecs", action="store_true", help="only the codec comparison")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_convert_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.codecs:
        codecs(work)
        return
    prefix = [sys.executable, "-m", "scnet_dask.cli"]
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
            if args.baseline is not None:
                shutil.rmtree(out)
                drop_cache(src)
                env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
                t_old, peak_old = run_measured(
                    [*prefix, "convert", str(src), str(out), "--overwrite"], env
                )
                print(
                    f"{'baseline':>8} {args.baseline}: {t_old:.1f} s, "
                    f"{size_mib / t_old:.1f} MiB/s, peak RSS {peak_old:.0f} MiB; "
                    f"this checkout is {t_old / t_conv:.2f}x faster",
                    flush=True,
                )
            src.unlink()
            shutil.rmtree(out)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
