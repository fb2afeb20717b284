"""Training throughput: lazy Zarr patch sampling vs the same training with the volume in RAM.

Builds a synthetic noisy volume and a Gaussian prior as OME-Zarr, then runs the same number of
SC-Net training steps twice in one process: patches read lazily from Zarr (with background
prefetching) and patches sliced from in-memory numpy arrays. Prints steps/s, the fraction of
wall time the trainer waited for data, and the ratio lazy / in-RAM (goal: wait < 5 %,
ratio >= 0.95). The blind spot runs where the training runs (as in ``train``), and its time
(synchronised on a GPU) is reported beside the data wait: the wait plus the blind spot is what
a step spends on batch preparation.

    python benchmarks/bench_train.py [--patch 64] [--features 32] [--steps 12] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from scnet_dask.commands.convert import convert
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import ConvertConfig, PriorConfig
from scnet_dask.engine.sampling import PatchSampler, split_regions
from scnet_dask.model.blindspot import blind_spot_replace
from scnet_dask.model.device import resolve_device
from scnet_dask.model.losses import scnet_losses
from scnet_dask.model.unet import SCNetUNet


def make_data(work: Path, shape: tuple[int, int, int]) -> tuple[Path, Path]:
    import mrcfile

    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    vol = (np.sin(x / 6) * np.cos(y / 9) * np.cos(z / 7)).astype(np.float32)
    vol = vol + rng.standard_normal(shape, dtype=np.float32)
    src = work / "noisy.mrc"
    with mrcfile.new(src, overwrite=True) as m:
        m.set_data(vol)
        m.voxel_size = 10.0
    n, p = work / "noisy.zarr", work / "prior.zarr"
    convert(ConvertConfig(input=src, output=n, chunks=64), show_progress=False)
    make_prior(PriorConfig(noisy=n, output=p, sigma=1.5), show_progress=False)
    return n, p


def run(
    sampler: PatchSampler, steps: int, batch: int, features: int, device: torch.device
) -> tuple[float, float, float]:
    torch.manual_seed(0)
    model = SCNetUNet(features).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=4e-4, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(1)
    blind = [0.0]

    def step() -> None:
        got = sampler.next_batch(batch)
        n = torch.from_numpy(got["noisy"]).to(device)
        p = torch.from_numpy(got["prior"]).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        src, mask = blind_spot_replace(n, p, generator=gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        blind[0] += time.perf_counter() - t
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(src)
        loss = scnet_losses(out.float(), n, p, mask)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    w0, blind[0] = sampler.wait_seconds, 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return steps / wall, (sampler.wait_seconds - w0) / wall, blind[0] / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 256, 256])
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        n, p = make_data(Path(tmp), tuple(args.shape))
        gn, gp = zarr.open_group(str(n)), zarr.open_group(str(p))
        stats_n = dict(gn.attrs)["scnet_dask"]["statistics"]
        stats_p = dict(gp.attrs)["scnet_dask"]["statistics"]
        region, _ = split_regions(tuple(args.shape), args.patch, 0.0)
        results = {}
        for name, arrays in (
            ("lazy zarr", (gn["0"], gp["0"])),
            ("in RAM", (gn["0"][:], gp["0"][:])),
        ):
            s = PatchSampler(
                {"noisy": arrays[0], "prior": arrays[1]},
                {"noisy": stats_n, "prior": stats_p},
                args.patch, region, seed=0,
            )  # fmt: skip
            results[name] = run(s, args.steps, args.batch, args.features, device)
            s.close()
    print(
        f"device {device}, patch {args.patch}³ x {args.batch}, features {args.features}, "
        f"{args.steps} steps"
    )
    for name, (sps, wait, blind) in results.items():
        print(
            f"  {name:>10}: {sps:.3f} steps/s ({1 / sps:.3f} s/step), data wait {100 * wait:.2f} %"
            f", blind spot {100 * blind:.2f} %, together {100 * (wait + blind):.2f} %"
        )
    ratio = results["lazy zarr"][0] / results["in RAM"][0]
    print(
        f"  ratio lazy / in RAM: {ratio:.3f} (goal >= 0.95); lazy wait fraction "
        f"{100 * results['lazy zarr'][1]:.2f} % (goal < 5 %)"
    )


if __name__ == "__main__":
    main()
