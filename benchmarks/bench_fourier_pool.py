"""Peak RSS and time of building the Fourier pool (fourier-n2n) out of core, two volume sizes.

For each size a synthetic float32 OME-Zarr volume is written, then a fresh process builds a
pool of ``--members`` members (the whole-volume rfftn through Zarr stage stores, then one
masked irfftn per member) and reports its own peak RSS. The goal: the 1 GiB volume's peak
within 1.3x of the 0.125 GiB volume's (memory bounded by slabs, not by the volume).

    python benchmarks/bench_fourier_pool.py [--sizes-gib 0.125 1] [--members 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_denoise import make_volume  # type: ignore[import-not-found]  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
from scnet_dask.methods.fourier_n2n import FourierTrainOptions, build_pool
src, folder, members = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
opts = FourierTrainOptions(pool_size=members, pairs=1)
t0 = time.perf_counter()
build_pool(src, folder, opts, seed=0, show_progress=False)
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def shape_for(gib: float) -> tuple[int, int, int]:
    n = gib * 2**30 / 4
    z = max(16, int(round((n / 16) ** (1 / 3))))  # a tomogram-like slab: x = y = 4 z
    xy = int(round((n / z) ** 0.5))
    return (z, xy, xy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes-gib", type=float, nargs="+", default=[0.125, 1.0])
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("bench_fourier_pool"))
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for gib in a.sizes_gib:
        shape = shape_for(gib)
        src = a.work / f"vol_{gib:g}.zarr"
        if not src.exists():
            make_volume(src, shape)
        folder = a.work / f"pool_{gib:g}"
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", CHILD, str(src), str(folder), str(a.members)],
                           capture_output=True, text=True, check=True)  # fmt: skip
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res.update(gib=gib, shape=shape, wall=time.perf_counter() - t0)
        rows.append(res)
        print(f"{gib:g} GiB {shape}: pool of {a.members} in {res['seconds']:.1f} s, peak RSS "
              f"{res['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
    if len(rows) >= 2:
        ratio = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
        print(f"peak RSS ratio {rows[-1]['gib']:g} GiB / {rows[0]['gib']:g} GiB: {ratio:.2f} "
              f"(goal <= 1.3)")  # fmt: skip


if __name__ == "__main__":
    main()
