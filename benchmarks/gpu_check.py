"""The GPU acceptance run in one command: every GPU path of scnet-dask, timed, in one table.

    python benchmarks/gpu_check.py                  # on one H100/H200: under 8 minutes
    python benchmarks/gpu_check.py --dry-run        # on a CPU: every step wired, sizes tiny

Steps (each a row of the Markdown table printed at the end and written to ``--out``):

1. the ``gpu``-marked tests (``python -m pytest -m gpu``);
2. bf16 vs fp32 denoise of the same volume: time of each and the relative RMS difference;
3. ``--tile auto``'s memory model against the measured peak (``torch.cuda.max_memory_allocated``)
   of one forward of the paper's network (32 features, up-sampling block) per tile size;
4. SC-Net training, 200 steps of 8 x 64³ patches, 32 features: steps/s;
5. denoise throughput of a 512 x 1024 x 1024 volume with the paper's network: voxels/s and the
   GPU-busy fraction (time inside the network / wall time);
6. a LocalCUDACluster denoise equal to the threaded one.

With ``--dry-run`` the sizes shrink (a 32 x 64 x 64 volume, 3 training steps, tiles of 32) and
the device is the CPU (a LocalCluster stands in for the LocalCUDACluster), so CI checks that
every step runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import torch
from distributed import Client, LocalCluster

from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import DenoiseConfig, PriorConfig, TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.io import open_source
from scnet_dask.io.store import write_volume_zarr
from scnet_dask.methods.runtime import forward_stats, reset_forward_stats
from scnet_dask.methods.scnet import write_checkpoint
from scnet_dask.model.unet import SCNetUNet

Row = tuple[str, str, str]


def _volume(path: Path, shape: tuple[int, int, int], chunk: int) -> Path:
    """A structured noisy volume written as OME-Zarr chunk by chunk (never whole in RAM)."""
    rs = da.random.RandomState(0)
    z, y, x = (da.arange(n, chunks=chunk, dtype=np.float32) for n in shape)
    clean = da.sin(x[None, None, :] / 7) * da.cos(y[None, :, None] / 9)
    clean = clean * da.cos(z[:, None, None] / 5)
    noisy = (clean + 0.7 * rs.standard_normal(shape, chunks=chunk)).astype(np.float32)
    write_volume_zarr(noisy, path, (10.0, 10.0, 10.0), {}, chunk, 1, None, False)
    return path


def _checkpoint(path: Path, features: int) -> Path:
    """The paper's network (random weights: speed and memory do not depend on them)."""
    torch.manual_seed(0)
    net = SCNetUNet(features=features, upsample=True)
    norm = {"noisy": {"mean": 0.0, "std": 1.0, "voxel_size_angstrom": [10.0] * 3}}
    write_checkpoint(path, net, norm, {"gpu_check": True})
    return path


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _denoise(src: Path, ck: Path, out: Path, device: str, amp: bool, chunk: int) -> dict:
    cfg = DenoiseConfig(input=src, checkpoint=ck, output=out, device=device, amp=amp,
                        chunks=chunk, overwrite=True)  # fmt: skip
    return denoise(cfg, show_progress=False)


def step_tests(dry: bool) -> Row:
    """The gpu-marked tests (they skip without CUDA)."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    last = (r.stdout.strip().splitlines() or ["(no output)"])[-1]
    ok = r.returncode in (0, 5) and "failed" not in last
    return ("gpu-marked tests", last, "ok" if ok else "FAILED")


def step_amp(t: Path, src: Path, ck: Path, device: str, chunk: int) -> Row:
    """bf16 autocast vs fp32: times and relative RMS difference."""
    _, t32 = _timed(lambda: _denoise(src, ck, t / "fp32.zarr", device, False, chunk))
    _, t16 = _timed(lambda: _denoise(src, ck, t / "bf16.zarr", device, True, chunk))
    a = np.asarray(open_source(t / "fp32.zarr").data[:, :64, :64])
    b = np.asarray(open_source(t / "bf16.zarr").data[:, :64, :64])
    rel = float(np.sqrt(np.mean((a - b) ** 2)) / (a.std() or 1.0))
    ok = rel < 2e-2 or not device.startswith("cuda")
    return ("bf16 vs fp32 denoise", f"fp32 {t32:.1f} s, bf16 {t16:.1f} s, rel. RMS {rel:.2e}",
            "ok" if ok else "FAILED")  # fmt: skip


def step_memory(device: str, edges: list[int]) -> Row:
    """The network's declared memory model vs the measured peak of one forward, per tile."""
    net = SCNetUNet(features=32, upsample=True).eval().to(device)
    per_voxel, per_plane, fixed = net.forward_memory
    parts, ok = [], True
    for e in edges:
        model = e**3 * per_voxel + e**2 * per_plane + fixed
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            with torch.inference_mode():
                net(torch.zeros(1, 1, e, e, e, device=device))
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
            ok = ok and peak <= model
            parts.append(f"{e}³: model {model / 2**20:.0f} MiB, measured {peak / 2**20:.0f} MiB")
        else:
            parts.append(f"{e}³: model {model / 2**20:.0f} MiB (measured: GPU only)")
    return ("tile memory model vs peak", "; ".join(parts), "ok" if ok else "model too low")


def step_train(t: Path, src: Path, device: str, dry: bool) -> Row:
    """SC-Net training steps/s (the paper's network, a Gaussian prior of the volume)."""
    prior = t / "prior.zarr"
    make_prior(PriorConfig(noisy=src, output=prior, sigma=1.0, overwrite=True), show_progress=False)
    steps, patch, batch, feats = (3, 16, 1, 4) if dry else (200, 64, 8, 32)
    cfg = TrainConfig.model_validate({
        "noisy": src, "prior": prior, "out": t / "run", "patch_size": patch, "batch_size": batch,
        "features": feats, "epochs": 1, "steps_per_epoch": steps, "val_patches": 1,
        "device": device, "plots": False, "overwrite": True,
    })  # fmt: skip
    s, wall = _timed(lambda: train(cfg, show_progress=False))
    rate = s["steps"] / (s["mean_step_seconds"] * s["steps"]) if s["steps"] else 0.0
    return (f"train {steps} steps of {batch} x {patch}³, {feats} features",
            f"{rate:.2f} steps/s ({wall:.0f} s with start-up)", "ok")  # fmt: skip


def step_throughput(t: Path, ck: Path, device: str, shape: tuple[int, int, int], chunk: int) -> Row:
    """Denoise voxels/s of a large volume and the fraction of the time inside the network."""
    src = _volume(t / "big.zarr", shape, chunk)
    reset_forward_stats()
    s, wall = _timed(lambda: _denoise(src, ck, t / "big_out.zarr", device, True, chunk))
    busy = forward_stats()["seconds"] / wall if wall > 0 else 0.0
    vox = float(np.prod(shape))
    return (f"denoise {'x'.join(map(str, shape))}, paper's network",
            f"{vox / wall / 1e6:.2f} Mvoxel/s, {wall:.0f} s, network busy {100 * busy:.0f} %, "
            f"tile {s['tile']}", "ok")  # fmt: skip


def step_cluster(t: Path, src: Path, ck: Path, device: str, chunk: int) -> Row:
    """A one-worker cluster (LocalCUDACluster on GPU) gives the threaded output exactly."""
    _denoise(src, ck, t / "threads.zarr", device, False, chunk)
    if device.startswith("cuda"):
        from dask_cuda import LocalCUDACluster

        cluster: Any = LocalCUDACluster(n_workers=1, dashboard_address=":0")
    else:
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0")
    with cluster, Client(cluster):
        _denoise(src, ck, t / "cluster.zarr", device, False, chunk)
    a = np.asarray(open_source(t / "threads.zarr").data)
    b = np.asarray(open_source(t / "cluster.zarr").data)
    same = bool(np.array_equal(a, b))
    kind = "LocalCUDACluster" if device.startswith("cuda") else "LocalCluster (CPU stand-in)"
    return (f"{kind} denoise = threads", f"identical: {same}", "ok" if same else "FAILED")


def main(argv: list[str] | None = None) -> int:
    """Run every step; print and write the table; exit 1 if a step failed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the wiring")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.md"), help="Markdown table")
    args = ap.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on a CPU", file=sys.stderr)
        return 2
    device = "cpu" if dry else "cuda:0"
    chunk = 32 if dry else 128
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        src = _volume(t / "v.zarr", (32, 64, 64) if dry else (128, 256, 256), chunk)
        ck = _checkpoint(t / "c.pt", 4 if dry else 32)
        steps: list[tuple[str, Callable[[], Row]]] = [
            ("gpu-marked tests", lambda: step_tests(dry)),
            ("bf16 vs fp32 denoise", lambda: step_amp(t, src, ck, device, chunk)),
            ("tile memory model", lambda: step_memory(device, [32] if dry else [64, 128, 192])),
            ("training", lambda: step_train(t, src, device, dry)),
            ("denoise throughput", lambda: step_throughput(
                t, ck, device, (32, 64, 64) if dry else (512, 1024, 1024), chunk)),
            ("cluster denoise", lambda: step_cluster(t, src, ck, device, chunk)),
        ]  # fmt: skip
        for name, step in steps:
            try:
                rows.append(step())
            except Exception as e:  # a broken step is a row, and the run goes on
                rows.append((name, f"{type(e).__name__}: {str(e)[:200]}", "FAILED"))
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not dry else "CPU"
    head = f"GPU acceptance run on {gpu}{' (dry run: figures mean nothing)' if dry else ''}"
    table = "\n".join([f"**{head}**", "", "| step | result | verdict |", "|---|---|---|",
                       *(f"| {a} | {b} | {c} |" for a, b, c in rows)])  # fmt: skip
    args.out.write_text(table + "\n")
    print(table)
    return 0 if all(r[2] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
