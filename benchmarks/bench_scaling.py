"""Scaling over Dask workers: denoise throughput and DDP training steps/s, 1 vs 2 workers.

Denoise: the same volume and network on a ``LocalCluster`` of 1 worker and of 2 workers (1 thread
each) → scaling efficiency T1 / (2 x T2) (goal >= 0.85). Training: steps/s with 1 and 2 DDP
ranks (gloo on CPU; each rank runs batch ``--batch`` so 2 ranks process twice the patches) →
efficiency = (2-rank patches/s) / (2 x 1-rank patches/s). On a machine with GPUs, ``--gpu``
compares a ``LocalCUDACluster`` of 1 worker with the threaded path (goal >= 0.95).

    python benchmarks/bench_scaling.py [--shape 64 256 256] [--features 4] [--gpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_denoise import make_checkpoint, make_volume  # type: ignore[import-not-found]
from distributed import Client, LocalCluster

from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import DenoiseConfig, PriorConfig, TrainConfig
from scnet_dask.distributed.ddp import train_distributed


def timed_denoise(src: Path, ck: Path, out: Path, device: str) -> float:
    t0 = time.perf_counter()
    denoise(
        DenoiseConfig(input=src, checkpoint=ck, output=out, chunks=64, device=device),
        show_progress=False,
    )
    return time.perf_counter() - t0


def cluster(n: int) -> tuple[LocalCluster, Client]:
    c = LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env={"OMP_NUM_THREADS": "1"},
    )
    return c, Client(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 256, 256])
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--gpu", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src, ck = work / "vol.zarr", work / "c.pt"
        make_volume(src, (a.shape[0], a.shape[1], a.shape[2]), chunks=64)
        make_checkpoint(ck, a.features)
        times = {}
        for n in (1, 2):
            c, client = cluster(n)
            with c, client:
                timed_denoise(src, ck, work / f"warm{n}.zarr", "cpu")  # load the model
                times[n] = timed_denoise(src, ck, work / f"d{n}.zarr", "cpu")
        eff = times[1] / (2 * times[2])
        print(f"denoise {tuple(a.shape)}: 1 worker {times[1]:.1f} s, 2 workers {times[2]:.1f} s")
        print(f"  scaling efficiency T1 / (2 T2) = {eff:.3f} (goal >= 0.85)")

        prior = work / "prior.zarr"
        make_prior(PriorConfig(noisy=src, output=prior, sigma=1.5), show_progress=False)
        rate = {}
        for n in (1, 2):
            cfg = TrainConfig(
                noisy=src, prior=prior, out=work / f"run{n}", patch_size=64,
                features=a.features, batch_size=a.batch, epochs=1, steps_per_epoch=a.steps,
                val_patches=0, plots=False, device="cpu",
            )  # fmt: skip
            c, client = cluster(n)
            with c, client:
                t0 = time.perf_counter()
                s = train_distributed(cfg, client)
                wall = time.perf_counter() - t0
            rate[n] = n * a.batch * a.steps / s["mean_step_seconds"] / a.steps
            print(
                f"train {n} rank(s): {s['mean_step_seconds']:.2f} s/step, "
                f"{rate[n]:.2f} patches/s (64³), run wall {wall:.1f} s"
            )
        print(f"  DDP efficiency = {rate[2] / (2 * rate[1]):.3f}")

        if a.gpu:
            from dask_cuda import LocalCUDACluster

            t_threads = timed_denoise(src, ck, work / "g0.zarr", "cuda")
            with LocalCUDACluster(n_workers=1, dashboard_address=":0") as c, Client(c):
                timed_denoise(src, ck, work / "gw.zarr", "cuda")
                t_cuda = timed_denoise(src, ck, work / "g1.zarr", "cuda")
            print(
                f"GPU: threads {t_threads:.1f} s, LocalCUDACluster(1) {t_cuda:.1f} s, "
                f"ratio {t_threads / t_cuda:.3f} (goal >= 0.95)"
            )


if __name__ == "__main__":
    main()
