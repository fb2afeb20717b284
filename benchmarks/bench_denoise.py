"""Tiled inference: pipeline efficiency, halo overhead, ours vs the public SC-Net scheme, memory.

``--part speed`` (one process, one volume, one network, same weights):

(a) pipeline efficiency = seconds inside the network's forward / wall time of ``denoise``
    (reading, tiling, blending, writing, pyramid and statistics included);
(b) halo overhead = voxels pushed through the network / output voxels, for the benchmark volume
    and, from the tile arithmetic alone, for a 512 x 1024 x 1024 tomogram at default settings;
(c) ours vs the public SC-Net inference scheme, re-implemented minimally here: the whole
    volume in RAM, 128³ tiles with 32 voxels of padding cropped, σ 0.5 after; wall-time ratio
    and the max |difference| between the two outputs; voxels/s of both.

``--part overhead`` (arithmetic only): network voxels per output voxel for a 512 x 1024 x 1024
tomogram at ``--chunks 128 --halo auto``: the old plan (symmetric halo of the larger reach, one
tile per chunk), two-sided halos with one tile per chunk, and ``--tile auto`` for this machine's
RAM and for an H200 (0.7 x 139 GiB), with the paper's network (32 features, up-sampling block)
and with the benchmark's.

``--part graph``: building the denoise graph of a 1024 x 2048 x 2048 volume (chunks 128, 2,048
chunks; the input is a Zarr array with metadata only) without running it: seconds, the
process's peak RSS growth, and the number of tasks.

``--part memory``: peak RSS of the whole process tree of ``scnet-dask denoise`` on a 0.5 GiB
and a 4 GiB float32 input at the same settings (inputs synthesised lazily and written to
OME-Zarr chunk by chunk; a small network without the up-sampling block and ``--halo 16`` so
that it runs in minutes on a CPU).

    python benchmarks/bench_denoise.py [--part speed|overhead|graph|memory|all] [--features 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import psutil
import torch
import zarr
from scipy.ndimage import gaussian_filter

from scnet_dask.commands.denoise import denoise
from scnet_dask.config import DenoiseConfig
from scnet_dask.io.store import write_volume_zarr
from scnet_dask.methods._unet import NetworkPredictor, network_predictor
from scnet_dask.methods.runtime import forward_stats, reset_forward_stats
from scnet_dask.methods.scnet import write_checkpoint
from scnet_dask.model.device import resolve_device
from scnet_dask.model.unet import SCNetUNet
from scnet_dask.tiling.blend import TilePlan
from scnet_dask.tiling.halo import plan_halo, plan_halo_sides
from scnet_dask.tiling.tilesize import CPU_FRACTION, GPU_FRACTION, choose_tile


def make_volume(path: Path, shape: tuple[int, int, int], chunks: int = 128) -> None:
    """A lazily generated noisy volume (smooth pattern + noise), written chunk by chunk."""
    rng = da.random.default_rng(0)
    noise = rng.standard_normal(shape, chunks=chunks, dtype=np.float32)
    z = da.arange(shape[0], chunks=chunks, dtype=np.float32)[:, None, None]
    y = da.arange(shape[1], chunks=chunks, dtype=np.float32)[None, :, None]
    x = da.arange(shape[2], chunks=chunks, dtype=np.float32)[None, None, :]
    data = (da.sin(x / 6) * da.cos(y / 9) * da.cos(z / 7) + noise).astype(np.float32)
    attrs = {"name": path.name, "voxel_size_angstrom": [10.0] * 3, "voxel_size_found": True}
    write_volume_zarr(data, path, (10.0, 10.0, 10.0), attrs, chunks, 1, None, False)


def make_checkpoint(path: Path, features: int, upsample: bool = True) -> None:
    torch.manual_seed(0)
    model = SCNetUNet(features=features, upsample=upsample)
    norm = {"noisy": {"mean": 0.0, "std": 1.0, "voxel_size_angstrom": [10.0] * 3}}
    write_checkpoint(path, model, norm, {"benchmark": "untrained"})


def public_scheme(
    vol: np.ndarray, predict: NetworkPredictor, tile: int = 128, pad: int = 32
) -> np.ndarray:
    """The public SC-Net test loop: volume in RAM, tiles of ``tile``³, ``pad`` voxels cropped."""
    core = tile - 2 * pad
    n = vol.shape
    ends = [-(-s // core) * core for s in n]
    padded = np.pad(vol, [(pad, e - s + pad) for s, e in zip(n, ends, strict=True)], mode="reflect")
    out = np.empty(tuple(ends), dtype=np.float32)
    for z0 in range(0, ends[0], core):
        for y0 in range(0, ends[1], core):
            for x0 in range(0, ends[2], core):
                t = padded[z0 : z0 + tile, y0 : y0 + tile, x0 : x0 + tile]
                y = predict(t[None])[0]
                out[z0 : z0 + core, y0 : y0 + core, x0 : x0 + core] = y[
                    pad : pad + core, pad : pad + core, pad : pad + core
                ]
    return gaussian_filter(out[: n[0], : n[1], : n[2]], 0.5, mode="reflect")


def speed(work: Path, shape: tuple[int, int, int], features: int, device: str) -> None:
    src, ck = work / "vol.zarr", work / "ckpt.pt"
    make_volume(src, shape)
    make_checkpoint(ck, features)
    cfg = DenoiseConfig(input=src, checkpoint=ck, output=work / "ours.zarr", device=device)
    reset_forward_stats()
    t0 = time.perf_counter()
    res = denoise(cfg, show_progress=False)
    wall = time.perf_counter() - t0
    fwd = forward_stats()["seconds"]
    ours = zarr.open_group(str(work / "ours.zarr"), mode="r")["0"][...]
    vol = zarr.open_group(str(src), mode="r")["0"][...]
    pred = network_predictor(ck, str(resolve_device(device)), True)
    reset_forward_stats()
    t1 = time.perf_counter()
    theirs = public_scheme(vol, pred)
    wall_pub = time.perf_counter() - t1
    fwd_pub = forward_stats()["seconds"]
    chunk_cfg = cfg.model_copy(update={"output": work / "per_chunk.zarr", "tile": 128})
    t3 = time.perf_counter()
    chunk_res = denoise(chunk_cfg, show_progress=False)
    wall_chunk = time.perf_counter() - t3
    per_chunk = zarr.open_group(str(work / "per_chunk.zarr"), mode="r")["0"][...]
    fast_cfg = cfg.model_copy(update={"output": work / "fast.zarr", "halo": 16})
    t2 = time.perf_counter()
    fast_res = denoise(fast_cfg, show_progress=False)
    wall_fast = time.perf_counter() - t2
    fast = zarr.open_group(str(work / "fast.zarr"), mode="r")["0"][...]
    nvox = float(np.prod(shape))
    print(f"volume {shape} float32, SC-Net features {features}, device {device}")
    print(
        f"ours  : {wall:8.1f} s  {nvox / wall / 1e6:6.2f} Mvoxel/s  forward {fwd:.1f} s  "
        f"(--tile auto -> {res['tile']}, overhead {res['halo_overhead']:.2f})"
    )
    print(
        f"ours, one tile per chunk (--tile 128): {wall_chunk:.1f} s "
        f"(overhead {chunk_res['halo_overhead']:.2f}); auto is {wall_chunk / wall:.2f}x faster; "
        f"max |auto - per chunk| {np.abs(ours - per_chunk).max():.3g}"
    )
    print(
        f"public: {wall_pub:8.1f} s  {nvox / wall_pub / 1e6:6.2f} Mvoxel/s  forward {fwd_pub:.1f} s"
    )
    print(f"(a) pipeline efficiency (forward / wall): {fwd / wall:.3f}")
    print(f"(b) halo overhead: {res['halo_overhead']:.2f} on this volume (--part overhead)")
    print(
        f"(c) ours vs public: {wall_pub / wall:.2f}x faster; max |ours - public| "
        f"{np.abs(ours - theirs).max():.4g} (output std {ours.std():.4g})"
    )
    print(
        f"    --halo 16 (blended, not exact): {wall_fast:.1f} s, "
        f"{wall_pub / wall_fast:.2f}x faster "
        f"than public, halo overhead {fast_res['halo_overhead']:.2f}, max |fast - exact| "
        f"{np.abs(fast - ours).max():.4g}, RMS {np.sqrt(np.mean((fast - ours) ** 2)):.3g}"
    )


def _overhead(model: SCNetUNet, tile: tuple[int, int, int] | None, symmetric: bool) -> float:
    big = (512, 1024, 1024)
    chunks = tuple(((128,) * (n // 128)) for n in big)
    if symmetric:
        h, m = plan_halo("auto", model.receptive_margin, 0.5)
        plan = TilePlan(big, chunks, h, m, 16, "gaussian", 0.5)
    else:
        sd = plan_halo_sides("auto", model.receptive_margin, model.receptive_margin_hi, 0.5)
        plan = TilePlan(big, chunks, sd.halo_lo, sd.margin_lo, 16, "gaussian", 0.5,
                        sd.halo_hi, sd.margin_hi, tile)  # fmt: skip
    return plan.tile_voxels() / float(np.prod(big))


def overhead(features: int) -> None:
    """(a) Network voxels per output voxel for a 512 x 1024 x 1024 tomogram, chunks 128."""
    big = (512, 1024, 1024)
    budgets = {
        f"this machine's RAM ({CPU_FRACTION:.0%} of "
        f"{psutil.virtual_memory().available / 2**30:.0f} GiB available)": CPU_FRACTION
        * psutil.virtual_memory().available,
        f"an H200 ({GPU_FRACTION:.0%} of 139 GiB free)": GPU_FRACTION * 139 * 2**30,
    }
    print(f"(a) halo overhead, {big} at --chunks 128 --halo auto (public scheme: 8.00, inexact)")
    head = "network | old: symmetric, per chunk | two-sided, per chunk | device | --tile auto"
    print(f"| {head} | overhead |")
    print("|---|---|---|---|---|---|")
    for f, up in ((32, True), (features, True), (32, False)):
        model = SCNetUNet(features=f, upsample=up)
        sd = plan_halo_sides("auto", model.receptive_margin, model.receptive_margin_hi, 0.5)
        old, two = _overhead(model, None, True), _overhead(model, None, False)
        for dev, budget in budgets.items():
            tile = choose_tile(big, sd, 16, model.forward_memory, budget)
            print(
                f"| {f} features{', up-sampling' if up else ''} | {old:.2f} | {two:.2f} | {dev} "
                f"| {tile[0] if tile else '-'} | {_overhead(model, tile, False):.2f} |"
            )


_GRAPH = """
import sys, time, resource, numpy as np, zarr, dask.array as da
from pathlib import Path
from scnet_dask.tiling.blend import TilePlan
from scnet_dask.tiling.halo import plan_halo_sides
from scnet_dask.commands.denoise import _check_finite
from scnet_dask.methods._unet import network_predictor
from scnet_dask.tiling.graph import overlap_add
work, tile = Path(sys.argv[1]), int(sys.argv[2])
arr = zarr.create_array(str(work / "big.zarr"), shape=(1024, 2048, 2048), chunks=(128,) * 3,
                        dtype="f4", overwrite=True)
pred = network_predictor(work / "ckpt.pt", "cpu", True, 0.5)
g = pred.geometry
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
data = da.from_zarr(arr).map_blocks(_check_finite, path="big", dtype=np.float32)
sd = plan_halo_sides("auto", g.margin, g.margin_hi, 0.5)
plan = TilePlan(data.shape, data.chunks, sd.halo_lo, sd.margin_lo, 16, "gaussian", 0.5,
                sd.halo_hi, sd.margin_hi, (tile,) * 3 if tile else None)
out = overlap_add(data, pred, plan, reader=arr, scratch=work / "scratch",
                  done_markers=work / "done", delete_pieces=False)
n = len(dict(out.__dask_graph__()))
t1 = time.perf_counter()
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, t1 - t0, (r1 - r0) / 1024)
"""


def graph(work: Path, features: int) -> None:
    """(f) Build (materialise) the denoise graph of a 1024 x 2048 x 2048 volume, not run it."""
    make_checkpoint(work / "ckpt.pt", features)
    print("(f) denoise graph of (1024, 2048, 2048) at --chunks 128 (2,048 chunks), not run")
    for tile in (0, 256):
        out = subprocess.run(
            [sys.executable, "-c", _GRAPH, str(work), str(tile)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        n, secs, mib = out.stdout.split()
        label = "one tile per chunk" if not tile else f"--tile {tile}"
        print(f"    {label}: {int(n)} tasks, built in {float(secs):.1f} s, "
              f"peak RSS growth {float(mib):.0f} MiB (goal < 30 s, < 1 GiB)")  # fmt: skip


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def peak_rss(cmd: list[str]) -> tuple[int, float]:
    """Run ``cmd``, polling the RSS of its process tree every 0.1 s; (peak bytes, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = [0]

    def poll() -> None:
        while proc.poll() is None:
            try:
                peak[0] = max(peak[0], _tree_rss(ps))
            except psutil.Error:
                pass
            time.sleep(0.1)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _, err = proc.communicate()
    th.join()
    if proc.returncode:
        raise SystemExit(f"denoise failed: {err.strip().splitlines()[-1:]}")
    return peak[0], time.perf_counter() - t0


def memory(work: Path, features: int, device: str) -> None:
    ck = work / "small.pt"
    make_checkpoint(ck, features, upsample=False)
    rows = []
    for label, shape in (("0.5 GiB", (512, 512, 512)), ("4 GiB", (1024, 1024, 1024))):
        src = work / f"in_{shape[0]}.zarr"
        t0 = time.perf_counter()
        make_volume(src, shape)
        gen = time.perf_counter() - t0
        out = work / f"out_{shape[0]}.zarr"
        cmd = [sys.executable, "-m", "scnet_dask.cli", "denoise", str(src), str(ck), str(out)]
        cmd += ["--chunks", "128", "--halo", "16", "--device", device]
        rss, secs = peak_rss(cmd)
        rows.append((label, shape, rss, secs, gen))
        print(
            f"{label:8s} {shape}: peak RSS {rss / 2**20:7.0f} MiB, denoise {secs:6.0f} s "
            f"({np.prod(shape) / secs / 1e6:.2f} Mvoxel/s), input written in {gen:.0f} s",
            flush=True,
        )
        for p in (src, out):
            subprocess.run(["rm", "-rf", str(p)], check=False)
    print(f"RSS ratio 4 GiB / 0.5 GiB: {rows[1][2] / rows[0][2]:.3f} (goal <= 1.3)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--part", choices=["speed", "overhead", "graph", "memory", "all"], default="all"
    )
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 384, 384])
    ap.add_argument("--features", type=int, default=4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()
    device = str(resolve_device(a.device))
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        if a.part in ("overhead", "all"):
            overhead(a.features)
        if a.part in ("graph", "all"):
            graph(Path(tmp), a.features)
        if a.part in ("speed", "all"):
            speed(Path(tmp), (a.shape[0], a.shape[1], a.shape[2]), a.features, device)
        if a.part in ("memory", "all"):
            memory(Path(tmp), 2, device)


if __name__ == "__main__":
    main()
