"""Tile size for the device: memory estimate, choice, and its use by denoise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from scnet_dask.model.unet import SCNetUNet
from scnet_dask.tiling.halo import plan_halo_sides
from scnet_dask.tiling.tilesize import TILE_CANDIDATES, choose_tile, tile_edges, tile_memory_bytes


def _sides(model: SCNetUNet):
    return plan_halo_sides("auto", model.receptive_margin, model.receptive_margin_hi, 0.5)


def test_tile_edges_cover_core_and_both_halos_on_the_grid():
    model = SCNetUNet(features=4, upsample=True)
    sides = _sides(model)  # halo (34, 58, 34) below, (27, 43, 27) above
    edges = tile_edges(128, (512, 1024, 1024), sides, 16)
    assert all(e % 16 == 0 for e in edges)
    assert edges == (128 + 48 + 32, 128 + 64 + 48, 128 + 48 + 32)
    # never more than the padded volume
    assert tile_edges(256, (40, 1024, 1024), sides, 16) == (48, 256 + 112, 256 + 80)


def test_choose_tile_takes_the_largest_core_that_fits():
    model = SCNetUNet(features=32, upsample=True)
    sides, shape = _sides(model), (512, 1024, 1024)
    bpv = model.forward_memory
    assert choose_tile(shape, sides, 16, None, 1e12) is None  # no memory model: per chunk
    need = {c: tile_memory_bytes(c, shape, sides, 16, bpv) for c in TILE_CANDIDATES}
    assert all(
        need[a] > need[b] for a, b in zip(TILE_CANDIDATES[:-1], TILE_CANDIDATES[1:], strict=True)
    )
    assert choose_tile(shape, sides, 16, bpv, need[256]) == (256,) * 3
    assert choose_tile(shape, sides, 16, bpv, need[256] - 1) == (224,) * 3
    assert choose_tile(shape, sides, 16, bpv, need[128] * 1.01) == (128,) * 3
    # a batch of two needs twice the memory
    assert choose_tile(shape, sides, 16, bpv, need[128] * 1.01, batch_size=2) < (128,) * 3
    # nothing fits: the smallest, with a warning
    assert choose_tile(shape, sides, 16, bpv, 1.0) == (16,) * 3


_PROBE = """
import json, sys, torch
from scnet_dask.model.slice_unet import SliceUNet
from scnet_dask.model.unet import SCNetUNet

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

net = {"SCNetUNet": SCNetUNet, "SliceUNet": SliceUNet}[sys.argv[1]]
m = net(**json.loads(sys.argv[2])).eval()
x = torch.randn(1, 1, *json.loads(sys.argv[3]))
with torch.inference_mode():
    m(x[..., :16, :16, :16])  # warm up thread pools and kernels
    r0 = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    m(x)
print(status("VmHWM:") - r0)
"""


def _measured_peak(net: str, kwargs: dict, tile: tuple[int, int, int]) -> float:
    """Peak RSS growth (bytes) of one CPU inference forward of ``net(**kwargs)`` on a tile."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    args = [net, json.dumps(kwargs), json.dumps(list(tile))]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _estimate(memory: tuple[float, float, float], tile: tuple[int, int, int]) -> float:
    per_voxel, per_plane, fixed = memory
    return tile[0] * tile[1] * tile[2] * per_voxel + tile[1] * tile[2] * per_plane + fixed


@pytest.mark.parametrize(
    ("features", "upsample", "edge"), [(4, True, 64), (16, False, 128), (32, False, 128)]
)
def test_forward_memory_estimate_bounds_the_measured_peak(features, upsample, edge):
    """The declared memory model covers a real CPU inference forward's peak RSS (measured /
    estimated 0.74-0.88 for these; 0.34-0.88 over 4-32 features, 64³-128³ tiles)."""
    kwargs = {"features": features, "upsample": upsample}
    tile = (edge, edge, edge)
    measured = _measured_peak("SCNetUNet", kwargs, tile)
    model = SCNetUNet(**kwargs)
    estimate = _estimate(model.forward_memory, tile)
    assert model.upsample_factors in ((1, 1, 1), (2, 1, 2))
    assert 0.5 * estimate < measured <= estimate, (measured, estimate)
    assert np.isfinite(estimate)


@pytest.mark.parametrize(
    ("features", "slices", "depth", "edge"), [(8, 3, 64, 256), (16, 5, 32, 256)]
)
def test_slice_unet_memory_estimate_bounds_the_measured_peak(features, slices, depth, edge):
    """The 2.5-D network's memory model covers a real CPU forward's peak RSS (measured /
    estimated 0.79-0.82 for these), so ``--tile auto`` applies to the vEM methods too."""
    from scnet_dask.methods._unet import network_geometry
    from scnet_dask.model.slice_unet import SliceUNet

    kwargs = {"slices": slices, "features": features}
    tile = (depth, edge, edge)
    measured = _measured_peak("SliceUNet", kwargs, tile)
    net = SliceUNet(**kwargs)
    assert network_geometry(net).memory == net.forward_memory  # what --tile auto reads
    estimate = _estimate(net.forward_memory, tile)
    assert 0.5 * estimate < measured <= estimate, (measured, estimate)
