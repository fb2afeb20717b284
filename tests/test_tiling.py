from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from scnet_dask.model.unet import NET_REACH, NET_REACH_HI, SCNetUNet
from scnet_dask.tiling.blend import (
    WINDOW_FLOOR,
    TilePlan,
    axis_weights,
    blend_pieces,
    contributions,
    read_box,
    read_spans,
    reflect_index,
    window_profile,
)
from scnet_dask.tiling.graph import overlap_add, predict_whole
from scnet_dask.tiling.halo import HaloSides, plan_halo, plan_halo_sides, post_filter_radius


def identity(x: np.ndarray) -> np.ndarray:
    return x.copy()


class NetPredictor:
    """A fixed random small SC-Net (eval mode) on float32 batches."""

    def __init__(
        self, features: int = 4, upsample: bool = True, seed: int = 0, upsample_axes: str = "zx"
    ):
        torch.manual_seed(seed)
        self.model = SCNetUNet(features, upsample, upsample_axes).eval()
        # non-trivial BatchNorm statistics, so eval mode is not an identity affine map
        for m in self.model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(x))[:, None])[:, 0].numpy()


def structured_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    clean = np.sin(x / 5.0) * np.cos(y / 7.0) + np.sin(z / 6.0)
    return (clean + 0.5 * rng.standard_normal(shape)).astype(np.float32)


def make_plan(data: da.Array, rf, post_sigma=0.0, halo="auto", multiple=16, window="gaussian"):
    h, m = plan_halo(halo, rf, post_sigma)
    return TilePlan(data.shape, data.chunks, h, m, multiple, window, post_sigma)


def sided_plan(data: da.Array, model: SCNetUNet, tile, post_sigma=0.5, halo="auto"):
    """A plan with the network's two-sided reach and tile cores of ``tile`` voxels."""
    sides = plan_halo_sides(halo, model.receptive_margin, model.receptive_margin_hi, post_sigma)
    t = None if tile is None else (tile,) * 3
    return TilePlan(
        data.shape, data.chunks, sides.halo_lo, sides.margin_lo, 16, "gaussian", post_sigma,
        sides.halo_hi, sides.margin_hi, t,
    )  # fmt: skip


# --- halo arithmetic and windows -------------------------------------------------------------


def test_plan_halo_auto_and_explicit():
    assert post_filter_radius(0.5) == 2 and post_filter_radius(0) == 0
    assert plan_halo("auto", (24, 48, 24), 0.5, blend=8) == ((34, 58, 34), (26, 50, 26))
    # explicit halos keep up to `blend` voxels for blending, the rest is margin (<= the reach)
    assert plan_halo(16, (24, 48, 24), 0.5, blend=8) == ((16, 16, 16), (8, 8, 8))
    assert plan_halo(100, (24, 48, 24), 0.0, blend=8) == ((100,) * 3, (24, 48, 24))
    assert plan_halo(4, 10, 0.0, blend=8) == ((4, 4, 4), (0, 0, 0))
    with pytest.raises(ValueError, match="halo must be 'auto'"):
        plan_halo("big", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        plan_halo(-1, 10)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        post_filter_radius(-1)


def test_plan_halo_sides_keeps_each_side_of_the_reach():
    assert plan_halo_sides("auto", (24, 48, 24), (17, 33, 17), 0.5, blend=8) == HaloSides(
        (34, 58, 34), (27, 43, 27), (26, 50, 26), (19, 35, 19)
    )
    # an explicit halo is the same on both sides; each margin is capped by its own reach
    assert plan_halo_sides(30, (24, 48, 24), (17, 33, 17), 0.0, blend=8) == HaloSides(
        (30,) * 3, (30,) * 3, (22, 22, 22), (17, 22, 17)
    )
    assert plan_halo_sides("auto", 5) == HaloSides((13,) * 3, (13,) * 3, (5,) * 3, (5,) * 3)


@pytest.mark.parametrize(
    "upsample", [pytest.param(True, marks=pytest.mark.slow), False]  # True: 36 s on 2 cores
)
def test_receptive_margin_of_the_unet_matches_an_impulse_probe(upsample):
    """The declared reach on each side is what an impulse probe finds at every phase.

    Below an output voxel the network reaches NET_REACH (48) voxels, above it NET_REACH_HI
    (33), at its own resolution; the up-sampling block halves both along z and x.
    """
    model = SCNetUNet(features=2, upsample=upsample).eval()
    if upsample:
        assert model.receptive_margin == (24, 48, 24)
        assert model.receptive_margin_hi == (17, 33, 17)
    else:
        assert model.receptive_margin == (NET_REACH,) * 3
        assert model.receptive_margin_hi == (NET_REACH_HI,) * 3
    torch.manual_seed(1)
    base = torch.randn(1, 1, 128, 128, 128)
    below = np.zeros(3, dtype=int)  # output p changed by an input below it: reach towards lower
    above = np.zeros(3, dtype=int)
    with torch.inference_mode():
        y0 = model(base)
        for off in range(16):
            x = base.clone()
            c = 56 + off
            x[0, 0, c, c, c] += 100.0
            d = torch.nonzero((model(x) - y0)[0, 0].abs() > 0).numpy() - c
            below = np.maximum(below, d.max(axis=0))
            above = np.maximum(above, (-d).max(axis=0))
    assert tuple(below) == model.receptive_margin
    # the high side rounds up after the 2x block (33 / 2 -> 17; the probe finds 16)
    assert all(0 <= h - a <= 1 for h, a in zip(model.receptive_margin_hi, above, strict=True))


def test_reflect_index_matches_numpy_pad():
    for n in (1, 2, 5, 17):
        a = np.arange(n)
        ref = np.pad(a, (0, 40), mode="reflect") if n > 1 else np.zeros(n + 40, int)
        np.testing.assert_array_equal(reflect_index(np.arange(n + 40), n), ref)


@pytest.mark.parametrize("kind", ["gaussian", "cosine"])
def test_window_profile(kind):
    w = window_profile(64, 10, 12, 6, kind)  # type: ignore[arg-type]
    assert w.min() == WINDOW_FLOOR and w.max() == 1.0
    assert np.all(w[:6] == WINDOW_FLOOR) and np.all(w[-6:] == WINDOW_FLOOR)
    assert np.all(w[16:-18] == 1.0)
    assert np.all(np.diff(w[6:16]) > 0) and np.all(np.diff(w[-18:-6]) < 0)
    border = window_profile(64, None, 12, 6, kind)  # type: ignore[arg-type]
    assert np.all(border[:46] == 1.0)  # full weight where the tile touches the volume border
    with pytest.raises(ValueError, match="window must be"):
        window_profile(8, 1, 1, 1, "box")  # type: ignore[arg-type]


def test_plan_rejects_bad_geometry():
    with pytest.raises(ValueError, match="do not add up"):
        TilePlan((10, 10, 10), ((5,), (10,), (10,)), (2, 2, 2), (1, 1, 1))
    with pytest.raises(ValueError, match="must not exceed halo"):
        TilePlan((10, 10, 10), ((10,), (10,), (10,)), (2, 2, 2), (3, 3, 3))
    data = da.zeros((10, 10, 10), chunks=5)
    plan = TilePlan((10, 10, 10), ((10,), (10,), (10,)), (2, 2, 2), (1, 1, 1))
    with pytest.raises(ValueError, match="differ from the plan"):
        overlap_add(data, identity, plan)


# --- oracles ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [
        ((90, 130, 150), (37, 50, 61)),  # awkward chunking
        ((40, 50, 45), (7, 9, 11)),  # chunks smaller than the halo
        ((20, 33, 41), (20, 33, 41)),  # volume smaller than one tile
    ],
)
@pytest.mark.parametrize("window", ["gaussian", "cosine"])
def test_identity_predictor_returns_input_exactly(shape, chunks, window):
    vol = structured_volume(shape)
    data = da.from_array(vol, chunks=chunks)
    plan = make_plan(data, (24, 48, 24), 0.0, window=window)
    out = overlap_add(data, identity, plan, batch_size=3).compute(scheduler="threads")
    np.testing.assert_array_equal(out, vol)


@pytest.mark.slow  # 41 s; the decoupled-tile test below checks tiled = whole in the default run
def test_tiled_network_matches_whole_volume_prediction():
    vol = structured_volume((90, 130, 150), seed=3)
    net = NetPredictor(features=4)
    data = da.from_array(vol, chunks=(37, 50, 61))
    plan = make_plan(data, net.model.receptive_margin, 0.5)
    tiled = overlap_add(data, net, plan, batch_size=2).compute(scheduler="threads")
    whole = predict_whole(vol, net, 16, 0.5)
    rel_rms = np.sqrt(np.mean((tiled - whole) ** 2) / np.mean(whole**2))
    assert rel_rms < 1e-4, rel_rms


@pytest.mark.parametrize(
    ("chunks", "tile"),
    [
        ((37, 50, 61), 32),  # tiles smaller than the chunks, not aligned with them
        ((16, 16, 16), 64),  # tiles covering several chunks
        ((37, 50, 61), None),  # one tile per chunk, asymmetric halos
    ],
)
def test_tiles_decoupled_from_chunks_match_whole_volume_prediction(chunks, tile):
    """Two-sided halos and tile cores independent of the chunks stay exact."""
    vol = structured_volume((70, 100, 90), seed=11)
    net = NetPredictor(features=4)
    data = da.from_array(vol, chunks=chunks)
    plan = sided_plan(data, net.model, tile)
    assert plan.halos_hi != plan.halo  # the two sides differ
    tiled = overlap_add(data, net, plan, batch_size=2).compute(scheduler="threads")
    whole = predict_whole(vol, net, 16, 0.5)
    rel_rms = np.sqrt(np.mean((tiled - whole) ** 2) / np.mean(whole**2))
    assert rel_rms < 1e-6, rel_rms  # float rounding; 16 voxels short of the reach give 5e-6
    # the identity is reproduced exactly with the same geometry (no post-filter)
    ident = overlap_add(data, identity, sided_plan(data, net.model, tile, 0.0))
    ident = ident.compute(scheduler="threads")
    np.testing.assert_array_equal(ident, vol)


def test_yx_upsampling_network_tiled_matches_whole_volume_prediction():
    """NMSG's y/x up-sampling block: its declared reach keeps the tiling exact."""
    net = NetPredictor(features=4, upsample_axes="yx")
    assert net.model.upsample_factors == (1, 2, 2)
    assert net.model.receptive_margin == (48, 24, 24)
    assert net.model.receptive_margin_hi == (33, 17, 17)
    vol = structured_volume((48, 80, 64), seed=13)
    data = da.from_array(vol, chunks=(29, 37, 40))
    plan = sided_plan(data, net.model, 32)
    tiled = overlap_add(data, net, plan, batch_size=2).compute(scheduler="threads")
    whole = predict_whole(vol, net, 16, 0.5)
    assert np.sqrt(np.mean((tiled - whole) ** 2) / np.mean(whole**2)) < 1e-6
    with pytest.raises(ValueError, match="upsample axes"):
        SCNetUNet(4, True, "zy")


def test_halo_smaller_than_the_reach_is_inexact_with_two_sided_margins():
    """The oracle above can fail: a low-side margin 16 voxels short of the reach."""
    vol = structured_volume((64, 96, 96), seed=12)
    net = NetPredictor(features=4, upsample=False)
    data = da.from_array(vol, chunks=32)
    m = net.model
    short = [tuple(r - 16 for r in m.receptive_margin), m.receptive_margin_hi]
    sides = plan_halo_sides("auto", short[0], short[1], 0.0, blend=0)
    plan = TilePlan(data.shape, data.chunks, sides.halo_lo, sides.margin_lo, 16, "gaussian",
                    0.0, sides.halo_hi, sides.margin_hi, (32, 32, 32))  # fmt: skip
    tiled = overlap_add(data, net, plan).compute(scheduler="threads")
    whole = predict_whole(vol, net, 16, 0.0)
    assert np.sqrt(np.mean((tiled - whole) ** 2) / np.mean(whole**2)) > 2e-6  # measured 5.4e-6


def test_larger_tiles_push_fewer_voxels_through_the_network():
    """The halo overhead at the defaults for a 512 x 1024 x 1024 tomogram (arithmetic only)."""
    shape = (512, 1024, 1024)
    data = da.zeros(shape, chunks=128, dtype=np.float32)
    model = SCNetUNet(features=2, upsample=True)
    old = make_plan(data, model.receptive_margin, 0.5)  # symmetric, one tile per chunk
    per_chunk = sided_plan(data, model, None)
    big = sided_plan(data, model, 256)
    n = float(np.prod(shape))
    assert old.tile_voxels() / n > per_chunk.tile_voxels() / n > big.tile_voxels() / n
    assert big.tile_voxels() / n <= 2.0


def test_tiled_network_small_volume_and_tiny_chunks():
    vol = structured_volume((20, 33, 41), seed=4)
    net = NetPredictor(features=2, upsample=False)
    data = da.from_array(vol, chunks=(6, 11, 9))
    plan = make_plan(data, net.model.receptive_margin, 0.5)
    tiled = overlap_add(data, net, plan).compute(scheduler="threads")
    whole = predict_whole(vol, net, 16, 0.5)
    assert np.sqrt(np.mean((tiled - whole) ** 2) / np.mean(whole**2)) < 1e-4


def _seam_ratio(out: np.ndarray, chunk: int) -> float:
    """Mean |gradient| across chunk boundaries / mean |gradient| between interior planes."""
    ratios = []
    for axis in range(3):
        g = np.abs(np.diff(out, axis=axis))  # g[i] is between planes i and i + 1
        idx = np.arange(g.shape[axis])
        boundary = (idx + 1) % chunk == 0
        across = np.take(g, idx[boundary], axis=axis).mean()
        inside = np.take(g, idx[~boundary], axis=axis).mean()
        ratios.append(across / inside)
    return float(max(abs(r - 1.0) for r in ratios))


@pytest.mark.parametrize("halo", ["auto", 16])
def test_no_seam_at_chunk_boundaries(halo):
    vol = structured_volume((64, 96, 96), seed=5)
    net = NetPredictor(features=4, seed=2)
    data = da.from_array(vol, chunks=32)
    plan = make_plan(data, net.model.receptive_margin, 0.5, halo=halo)
    out = overlap_add(data, net, plan).compute(scheduler="threads")
    assert _seam_ratio(out, 32) < 0.02
    # the test can fail: cropping tiles without any halo shows seams
    seamy = np.empty_like(vol)
    for sl in da.core.slices_from_chunks(data.chunks):
        pad = [(0, -(-(s.stop - s.start) // 16) * 16 - (s.stop - s.start)) for s in sl]
        t = np.pad(vol[sl], pad, mode="reflect")
        seamy[sl] = net(t[None])[0][tuple(slice(0, s.stop - s.start) for s in sl)]
    assert _seam_ratio(seamy, 32) > 0.02


def test_direct_reads_and_spilled_pieces_give_the_same_result(tmp_path):
    """Reading tiles straight from a zarr store and blending from scratch files is exact too."""
    import zarr

    vol = structured_volume((50, 70, 60), seed=7)
    store = zarr.create_array(
        str(tmp_path / "v.zarr"), shape=vol.shape, chunks=(16, 32, 32), dtype="f4"
    )
    store[...] = vol
    data = da.from_zarr(store).rechunk((20, 25, 30))
    net = NetPredictor(features=2)
    plan = make_plan(data, net.model.receptive_margin, 0.5)
    ref = overlap_add(data, net, plan).compute(scheduler="threads")
    scratch = tmp_path / "scratch"
    out = overlap_add(data, net, plan, reader=store, scratch=scratch).compute(scheduler="threads")
    np.testing.assert_array_equal(out, ref)
    assert not any(scratch.iterdir())  # every chunk's pieces were removed after blending
    apart = overlap_add(data, net, plan, reader=store, scratch=scratch, separate_reads=True)
    reads = [k for k in dict(apart.dask) if isinstance(k, tuple) and "-tile-" in k[0]]
    assert len(reads) == int(np.prod(plan.tile_grid))  # one read task per tile
    np.testing.assert_array_equal(apart.compute(scheduler="threads"), ref)
    ident = overlap_add(data, identity, make_plan(data, (3, 3, 3)), reader=store, scratch=scratch)
    np.testing.assert_array_equal(ident.compute(scheduler="threads"), vol)


# --- blend geometry, without Dask -------------------------------------------------------------
def _awkward_plan() -> TilePlan:
    return TilePlan(
        shape=(37, 50, 29),
        chunks=((10, 20, 7), (16, 16, 18), (29,)),
        halo=(5, 9, 3),
        margin=(3, 6, 2),
        multiple=8,
        window="cosine",
    )


def test_blend_geometry_reassembles_the_volume_exactly_without_dask():
    plan = _awkward_plan()
    rng = np.random.default_rng(0)
    vol = rng.standard_normal(plan.shape).astype(np.float32)
    starts = [np.cumsum((0, *c[:-1])) for c in plan.chunks]
    geometry = contributions(plan)
    assert set(geometry) == set(np.ndindex(3, 3, 1))
    for cijk, entries in geometry.items():
        c0 = [int(starts[k][cijk[k]]) for k in range(3)]
        shape = tuple(plan.chunks[k][cijk[k]] for k in range(3))
        covered = np.zeros(shape, bool)
        pieces = []
        for c in entries:
            # the identity predictor on the tile: the tile's in-volume part, read as a tile would
            box, index = read_box(read_spans(plan, c.tile))
            tile = vol[tuple(slice(a, b) for a, b in box)][np.ix_(*index)]
            crop = tuple(min(b, n) - a for a, b, n in read_spans(plan, c.tile))
            piece = tile[: crop[0], : crop[1], : crop[2]][c.src]
            pieces.append((piece, c.dst, c.weights))
            covered[c.dst] = True
            for spec, sl in zip(c.weights, c.dst, strict=True):
                w = axis_weights(spec)
                assert w.shape == (sl.stop - sl.start,) and (w >= WINDOW_FLOOR).all()
        assert covered.all(), cijk
        out = blend_pieces(shape, pieces)
        want = vol[tuple(slice(c0[k], c0[k] + shape[k]) for k in range(3))]
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)


def test_read_box_reflects_past_the_volume_end_like_numpy():
    plan = _awkward_plan()
    vol = np.arange(np.prod(plan.shape), dtype=np.float32).reshape(plan.shape)
    padded = np.pad(vol, [(0, p - n) for p, n in zip(plan.padded_shape, plan.shape, strict=True)],
                    mode="reflect")  # fmt: skip
    last = (2, 2, 0)
    spans = read_spans(plan, last)
    box, index = read_box(spans)
    tile = vol[tuple(slice(a, b) for a, b in box)][np.ix_(*index)]
    np.testing.assert_array_equal(tile, padded[tuple(slice(a, b) for a, b, _ in spans)])


def test_blend_graph_carries_no_weight_arrays():
    plan = _awkward_plan()
    data = da.zeros(plan.shape, chunks=plan.chunks, dtype=np.float32)
    out = overlap_add(data, identity, plan)
    for task in dict(out.dask).values():
        if isinstance(task, tuple) and task and task[0] is blend_pieces:
            for _, _, specs in task[2]:
                assert all(isinstance(v, (int, str, type(None))) for sp in specs for v in sp)
