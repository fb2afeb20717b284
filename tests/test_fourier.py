"""Fourier-sampling Noise2Noise: out-of-core FFT oracle, pool masks, pair draws, CLI."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from scnet_dask.engine.sampling import PatchSampler, split_regions
from scnet_dask.errors import OutputError
from scnet_dask.io import open_source
from scnet_dask.methods.fourier_n2n.fft import (
    PoolSpec,
    ball_radii,
    check_disk,
    irfftn_zarr,
    masked_inverse,
    pool_mask_block,
    rfftn_zarr,
)
from tests.conftest import run_cli, write_mrc


@pytest.fixture
def awkward(tmp_path) -> tuple[np.ndarray, da.Array]:
    v = np.random.default_rng(0).standard_normal((20, 33, 26)).astype(np.float32)
    return v, da.from_array(v, chunks=(7, 10, 9))


def test_out_of_core_fft_matches_numpy(awkward, tmp_path):
    v, d = awkward
    f = rfftn_zarr(d, tmp_path / "f", edge=8)
    ref = np.fft.rfftn(v)
    assert f.shape == ref.shape and f.dtype == np.complex64
    np.testing.assert_allclose(f.compute(), ref, rtol=1e-4, atol=1e-3)
    back = irfftn_zarr(f, v.shape, tmp_path / "i", edge=8).compute()
    np.testing.assert_allclose(back, v, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == ["fx.zarr", "fy.zarr", "fz.zarr"]


def test_pool_mask_statistics():
    shape = (64, 96, 96)
    spec = PoolSpec(shape, seed=3)
    r5, r10 = ball_radii(shape)
    assert 4 / 3 * np.pi * r5**3 == pytest.approx(0.05 * np.prod(shape))
    radii = [PoolSpec(shape, seed=s).radius() for s in range(50)]
    assert r5 <= min(radii) and max(radii) <= r10 and np.std(radii) > 0
    m = pool_mask_block(spec, spec.block_grid(), spec.radius(), [(0, 64), (0, 96), (0, 49)])
    kept = m != 0
    assert set(np.unique(m)) <= {-1.0, 0.0, 1.0}
    assert (m[0, 0, 0] != 0) and kept[:3, :3, :3].all()  # the low-frequency ball is kept
    assert 0.5 <= kept.mean() <= 0.7  # half of the blocks, plus the ball
    assert (m < 0).sum() / kept.sum() == pytest.approx(0.1, abs=0.01)
    # whole 8³ blocks outside the ball are kept or dropped together
    far = kept[24:32, 40:48, 40:48]
    assert far.all() or not far.any()


def test_pool_member_matches_a_numpy_oracle(awkward, tmp_path):
    v, d = awkward
    f = rfftn_zarr(d, tmp_path / "f", edge=8)
    spec = PoolSpec(v.shape, seed=5, block=4)
    got = masked_inverse(f, spec, tmp_path / "m", edge=8).compute()
    mask = np.zeros(f.shape, np.float32)
    starts = [np.cumsum((0, *c[:-1])) for c in f.chunks]
    for idx in np.ndindex(*f.numblocks):
        box = [(int(starts[k][idx[k]]), int(starts[k][idx[k]] + f.chunks[k][idx[k]]))
               for k in range(3)]  # fmt: skip
        mask[tuple(slice(a, b) for a, b in box)] = pool_mask_block(
            spec, spec.block_grid(), spec.radius(), box
        )
    want = np.fft.irfftn(np.fft.rfftn(v) * mask, s=v.shape, axes=(0, 1, 2))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_pairs_are_drawn_without_replacement(tmp_path):
    arrays, stats = {}, {}
    for k in range(6):
        z = zarr.create_array(str(tmp_path / f"a{k}.zarr"), shape=(16, 16, 16), chunks=(16,) * 3,
                              dtype="float32")  # fmt: skip
        z[...] = float(k)
        arrays[f"pool_{k}"], stats[f"pool_{k}"] = z, {"mean": 0.0, "std": 1.0}
    region, _ = split_regions((16, 16, 16), 16, 0.0)
    s = PatchSampler(arrays, stats, 16, region, seed=1, subset=4)
    seen = set()
    for _ in range(20):
        batch = s.next_batch(3)
        assert sorted(batch) == ["draw0", "draw1", "draw2", "draw3"]
        for b in range(3):
            values = [int(batch[f"draw{i}"][b, 0, 0, 0, 0]) for i in range(4)]
            assert len(set(values)) == 4
            seen.update(values)
    s.close()
    assert seen == set(range(6))


def test_disk_check_refuses_a_pool_that_does_not_fit(tmp_path):
    with pytest.raises(OutputError, match="GiB are free"):
        check_disk(tmp_path / "pool", 1 << 60)


def test_fourier_n2n_end_to_end_deterministic_and_bad_input(tmp_path, capsys):
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:32, 0:48, 0:48].astype(np.float32)
    clean = np.sin(x / 4) * np.cos(y / 5) * np.cos(z / 6)
    src = write_mrc(tmp_path / "v.mrc", (clean + 0.8 * rng.standard_normal(clean.shape))
                    .astype(np.float32), voxel=10.0)  # fmt: skip
    vol = tmp_path / "v.zarr"
    assert run_cli(["convert", src, vol, "--chunks", "16"], capsys)[0] == 0
    base = ["train", vol, "--method", "fourier-n2n", "--patch-size", "16", "--features", "8",
            "--depth", "2", "--val-patches", "1", "--device", "cpu", "--no-plots"]  # fmt: skip
    code, _, err = run_cli([*base, "--out", tmp_path / "bad", "--pool-size", "3",
                            "--pairs", "2"], capsys)  # fmt: skip
    assert code == 1 and "pool_size 3 is smaller than 2 x pairs = 4" in err
    assert not (tmp_path / "bad").exists()
    run = tmp_path / "run"
    code, _, err = run_cli([*base, "--out", run, "--pool-size", "6", "--pairs", "2", "--epochs",
                            "1", "--steps-per-epoch", "25", "--lr", "2e-3"], capsys)  # fmt: skip
    assert code == 0, err
    assert "Fourier pool: 6 of 6 members" in err
    assert len(list((run / "pool").glob("member_*.zarr"))) == 6
    member = open_source(run / "pool" / "member_000.zarr")
    assert member.voxel_size_angstrom == (10.0, 10.0, 10.0)
    args = ["--method", "fourier-n2n", "--chunks", "16", "--versions", "3", "--passes", "2"]
    outs = []
    for name in ("a.zarr", "b.zarr"):
        code, _, err = run_cli(["denoise", vol, run / "best.pt", tmp_path / name, *args], capsys)
        assert code == 0, err
        outs.append(np.asarray(open_source(tmp_path / name).data))
    np.testing.assert_array_equal(outs[0], outs[1])
    noisy = np.asarray(open_source(vol).data)
    corr = [np.corrcoef(a.ravel(), clean.ravel())[0, 1] for a in (outs[0], noisy)]
    assert corr[0] > corr[1] + 0.2
    code, _, err = run_cli(["denoise", vol, run / "best.pt", tmp_path / "c.zarr", *args[:4],
                            "--versions", "9"], capsys)  # fmt: skip
    assert code == 1 and "exceeds the 6 pool members" in err
    other = write_mrc(tmp_path / "o.mrc", np.zeros((32, 48, 32), np.float32), voxel=10.0)
    code, _, err = run_cli(["denoise", other, run / "best.pt", tmp_path / "d.zarr", *args],
                           capsys)  # fmt: skip
    assert code == 1 and "denoises the tomogram it was trained on" in err
    assert not (tmp_path / "d.zarr").exists()
    # the pool is reused by a second run with the same settings, refused with others
    code, _, err = run_cli([*base, "--out", tmp_path / "r2", "--pool", run / "pool",
                            "--pool-size", "6", "--pairs", "2", "--pool-flip", "0.2", "--epochs",
                            "1", "--steps-per-epoch", "2"], capsys)  # fmt: skip
    assert code == 1 and "other settings" in err and not (tmp_path / "r2").exists()
