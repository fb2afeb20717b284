"""Tile size for the device: the tile core whose forward fits the memory at hand.

Tiles are decoupled from storage chunks (:class:`scnet_dask.tiling.blend.TilePlan` ``tile``): the
halo a tile needs is fixed by the network's reach, so larger cores push fewer voxels through
the network per output voxel (a 512 x 1024 x 1024 tomogram with SC-Net's up-sampling block:
4.0 network voxels per output voxel with 128³ cores, 1.9 with 256³;
``benchmarks/bench_denoise.py --part overhead``), but the forward's memory grows with the
tile. ``--tile auto`` picks, among the cores of :data:`TILE_CANDIDATES` whose estimated peak
(from the network's declared memory model and the tile's size, halo included) fits a
fraction of the free memory of the device that runs the forward, the one with the least halo
overhead on the volume at hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil
import torch

from scnet_dask.tiling.blend import TilePlan
from scnet_dask.tiling.halo import HaloSides, Triple

__all__ = [
    "TILE_CANDIDATES",
    "GPU_FRACTION",
    "CPU_FRACTION",
    "tile_edges",
    "halo_overhead",
    "tile_memory_bytes",
    "device_memory_budget",
    "choose_tile",
]

log = logging.getLogger(__name__)

#: Tile core edges tried by ``--tile auto``, largest first (voxels).
TILE_CANDIDATES = (256, 224, 192, 160, 128, 96, 64, 48, 32, 16)
#: Fraction of a GPU's free memory one forward may use (cuDNN workspaces, the allocator's
#: fragmentation and the next tile's transfer need the rest).
GPU_FRACTION = 0.7
#: Fraction of the available RAM one CPU forward may use (forwards on one device run one at a
#: time; the reads, blends and writes of other threads hold a few tiles meanwhile).
CPU_FRACTION = 0.5


def tile_edges(
    core: int, shape: Sequence[int], halo: HaloSides, multiple: int
) -> tuple[int, int, int]:
    """Largest tile (voxels, z/y/x) a core of edge ``core`` gives on a volume of ``shape``.

    ``core`` is a multiple of ``multiple``, so cores start on the network's grid and each halo
    snaps outwards to the next multiple; never more than the padded volume.
    """
    if core % multiple:
        raise ValueError(f"tile core must be a multiple of {multiple}, got {core}")
    out = []
    for k in range(3):
        padded = -(-int(shape[k]) // multiple) * multiple
        lo = -(-halo.halo_lo[k] // multiple) * multiple
        hi = -(-halo.halo_hi[k] // multiple) * multiple
        out.append(min(padded, min(core, padded) + lo + hi))
    return (out[0], out[1], out[2])


def halo_overhead(core: int, shape: Sequence[int], halo: HaloSides, multiple: int) -> float:
    """Network voxels per output voxel with cubic tile cores of ``core`` voxels."""
    whole = ((int(shape[0]),), (int(shape[1]),), (int(shape[2]),))
    plan = TilePlan(
        (int(shape[0]), int(shape[1]), int(shape[2])), whole, halo.halo_lo, halo.margin_lo,
        multiple, halo_hi=halo.halo_hi, margin_hi=halo.margin_hi, tile=(core, core, core),
    )  # fmt: skip
    return plan.tile_voxels() / float(np.prod(shape))


def tile_memory_bytes(
    core: int,
    shape: Sequence[int],
    halo: HaloSides,
    multiple: int,
    memory: tuple[float, float, float],
    batch_size: int = 1,
) -> float:
    """Estimated peak memory of one forward of ``batch_size`` tiles of core ``core`` (bytes).

    ``memory``: the network's (bytes per voxel, bytes per (y, x) plane, fixed bytes).
    """
    z, y, x = tile_edges(core, shape, halo, multiple)
    per_voxel, per_plane, fixed = memory
    return batch_size * (z * y * x * per_voxel + y * x * per_plane) + fixed


def device_memory_budget(device: str, client: Any = None, gpu_workers: bool = False) -> float:
    """Bytes one forward may use on ``device`` (or on the workers of a distributed client).

    A GPU: :data:`GPU_FRACTION` of its free memory; a CPU: :data:`CPU_FRACTION` of the
    available RAM. With a distributed ``client`` the smallest worker decides (its GPU's free
    memory when ``gpu_workers``, else its memory limit).
    """
    if client is not None:
        return _cluster_budget(client, gpu_workers)
    if device.startswith("cuda"):

        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        return GPU_FRACTION * float(free)

    return CPU_FRACTION * float(psutil.virtual_memory().available)


def _gpu_free() -> float:

    if not torch.cuda.is_available():
        return 0.0
    return float(torch.cuda.mem_get_info(torch.cuda.current_device())[0])


def _cluster_budget(client: Any, gpu_workers: bool) -> float:
    info = client.scheduler_info(n_workers=-1).get("workers", {})
    if gpu_workers:
        gpus = [a for a, w in info.items() if "GPU" in (w.get("resources") or {})]
        free = [f for f in client.run(_gpu_free, workers=gpus).values() if f > 0]
        if free:
            return GPU_FRACTION * min(free)
    limits = [float(w.get("memory_limit") or 0) for w in info.values()]
    limits = [m for m in limits if m > 0]
    if limits:
        return CPU_FRACTION * min(limits)

    return CPU_FRACTION * float(psutil.virtual_memory().available)


def choose_tile(
    shape: Sequence[int],
    halo: HaloSides,
    multiple: int,
    memory: tuple[float, float, float] | None,
    budget_bytes: float,
    batch_size: int = 1,
) -> Triple | None:
    """The tile core (voxels, the same on every axis) that fits ``budget_bytes`` best.

    Among the candidates whose forward fits, the one that pushes the fewest voxels through the
    network for this volume (:func:`halo_overhead`; the larger on a tie): a core that does not
    divide the volume can cost more than a smaller one that does.

    Returns ``None`` when the predictor declares no memory use (``memory`` ``None``): then
    one tile per output chunk, as for the classical filters. When even the smallest candidate
    does not fit, the smallest is returned (and a warning logged): the forward may then run
    out of memory, and ``--tile`` sets it by hand.
    """
    if memory is None:
        return None
    cands = [c for c in TILE_CANDIDATES if c % multiple == 0] or [multiple]
    fits = [
        c
        for c in cands
        if tile_memory_bytes(c, shape, halo, multiple, memory, batch_size) <= budget_bytes
    ]
    if fits:
        best = min(fits, key=lambda c: (halo_overhead(c, shape, halo, multiple), -c))
        return (best, best, best)
    c = cands[-1]
    need = tile_memory_bytes(c, shape, halo, multiple, memory, batch_size)
    log.warning(
        "the smallest tile (%d voxels) needs about %.1f GiB per forward, more than the %.1f GiB "
        "at hand; set --tile or --batch-size by hand if it runs out of memory",
        c,
        need / 2**30,
        budget_bytes / 2**30,
    )
    return (c, c, c)
