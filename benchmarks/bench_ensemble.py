"""How denoising wall time grows with the ensemble size of s2s (passes per tile).

A short s2s training on a synthetic volume, then ``denoise`` at several ``--passes``, each
timed in this process (the same machine state for every row); prints seconds, seconds per pass
and the ratio to one pass. Passes of one tile are batched ``--pass-batch`` per forward call.

    python benchmarks/bench_ensemble.py [--shape 64 128 128] [--passes 1 4 16 32] [--device auto]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_denoise import make_volume  # type: ignore[import-not-found]  # noqa: E402

from scnet_dask.commands.denoise import denoise  # noqa: E402
from scnet_dask.config import DenoiseConfig, TrainConfig  # noqa: E402
from scnet_dask.engine.train import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128])
    ap.add_argument("--passes", type=int, nargs="+", default=[1, 4, 16, 32])
    ap.add_argument("--pass-batch", type=int, default=8)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--work", type=Path, default=Path("bench_ensemble"))
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    src = a.work / "vol.zarr"
    make_volume(src, tuple(a.shape), chunks=64)
    train(TrainConfig.model_validate({
        "noisy": src, "out": a.work / "run", "method": "s2s", "patch_size": 32,
        "features": a.features, "epochs": 1, "steps_per_epoch": 5, "val_patches": 1,
        "plots": False, "device": a.device,
    }), show_progress=False)  # fmt: skip
    base = None
    print("| passes | seconds | s / pass | x one pass |\n|---|---|---|---|")
    for n in a.passes:
        out = a.work / f"den_{n}.zarr"
        t0 = time.perf_counter()
        denoise(DenoiseConfig.model_validate({
            "input": src, "checkpoint": a.work / "run" / "best.pt", "output": out,
            "method": "s2s", "passes": n, "pass_batch": a.pass_batch, "chunks": 64,
            "device": a.device,
        }), show_progress=False)  # fmt: skip
        dt = time.perf_counter() - t0
        base = base or dt
        print(f"| {n} | {dt:.1f} | {dt / n:.2f} | {dt / base:.1f} |", flush=True)


if __name__ == "__main__":
    main()
