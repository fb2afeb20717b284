"""Volume EM: anisotropic stacks, the 2.5-D network, supervised and sub-lattice training."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import tifffile
import torch

from scnet_dask.engine.sampling import PatchSampler, Region, apply_augmentation
from scnet_dask.io import open_source
from scnet_dask.methods.vem_n2n import sublattices
from scnet_dask.model.losses import ssim2d
from scnet_dask.model.slice_unet import SliceUNet
from scnet_dask.science.fastscan import fast_scan
from scnet_dask.tiling.blend import TilePlan
from scnet_dask.tiling.graph import overlap_add, predict_whole
from scnet_dask.tiling.halo import plan_halo
from tests.conftest import run_cli

VOXEL = "500,40,40"


def _clean_stack(shape=(12, 96, 96), seed=0) -> np.ndarray:
    """Membrane-like 8-bit sections: dark curved lines on a bright background, varying in z."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float64)
    phase = rng.uniform(0, 6.28, 3)
    f = np.sin(x / 6 + phase[0] + z / 5) + np.sin(y / 7 + phase[1]) + 0.5 * np.sin((x + y) / 9)
    img = 200 - 140 * np.exp(-(f**2) / 0.1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _tif(path, data, voxel_zyx=(500.0, 40.0, 40.0)):
    vz, vy, vx = voxel_zyx
    tifffile.imwrite(
        path, data, imagej=True, resolution=(1 / vx, 1 / vy),
        metadata={"spacing": vz, "unit": "angstrom", "axes": "ZYX"},
    )  # fmt: skip
    return path


def _convert(capsys, src, out, *extra):
    code, _, err = run_cli(
        ["convert", src, out, "--chunks", "32", "--dtype", "source", *extra], capsys
    )
    assert code == 0, err
    return out


# --- anisotropic stacks end to end -----------------------------------------------------------


def test_anisotropic_voxel_size_survives_convert_denoise_export(tmp_path, capsys):
    stack = _clean_stack()
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, stack, photometric="minisblack")  # no voxel size in the file
    z = _convert(capsys, src, tmp_path / "s.zarr", "--voxel-size", VOXEL)
    assert open_source(z).voxel_size_angstrom == (500.0, 40.0, 40.0)
    assert open_source(z).data.dtype == np.uint8
    code, out, _ = run_cli(["info", z, "--json"], capsys)
    assert code == 0 and json.loads(out)["voxel_size_angstrom"] == [500.0, 40.0, 40.0]
    den = tmp_path / "d.zarr"
    code, _, err = run_cli(
        ["denoise", z, den, "--method", "gaussian", "--sigma", "1", "--sigma-z", "0",
         "--chunks", "32"], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert open_source(den).voxel_size_angstrom == (500.0, 40.0, 40.0)
    tif = tmp_path / "d.tif"
    code, _, err = run_cli(["export", den, tif, "--dtype", "source"], capsys)
    assert code == 0, err
    back = open_source(tif)
    assert back.data.dtype == np.uint8  # 8-bit in, 8-bit out
    assert back.voxel_size_angstrom == pytest.approx((500.0, 40.0, 40.0))
    # a 2-D filter per section: z is untouched where the sections are constant
    got = np.asarray(back.data)
    ref = np.stack([np.clip(np.round(_gauss2d(s, 1.0)), 0, 255) for s in stack]).astype(np.uint8)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def _gauss2d(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img.astype(np.float32), sigma, mode="reflect")


def test_voxel_size_one_value_or_three(tmp_path, capsys):
    src = tmp_path / "s.tif"
    tifffile.imwrite(src, _clean_stack((6, 32, 32)), photometric="minisblack")
    one = _convert(capsys, src, tmp_path / "a.zarr", "--voxel-size", "12.5")
    assert open_source(one).voxel_size_angstrom == (12.5, 12.5, 12.5)
    code, _, err = run_cli(["convert", src, tmp_path / "b.zarr", "--voxel-size", "5,4"], capsys)
    assert code == 1 and "one or three positive numbers" in err
    assert not (tmp_path / "b.zarr").exists()


def test_tiff_stack_and_folder_read_lazily_through_zarr(tmp_path):
    stack = (np.random.default_rng(1).random((9, 40, 56)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "tiled.tif", stack, tile=(16, 16), compression="zlib")
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, s in enumerate(stack):
        tifffile.imwrite(folder / f"z{i:04d}.tif", s)
    for path in (tmp_path / "tiled.tif", folder):
        vol = open_source(path)
        assert vol.data.dtype == np.uint16
        np.testing.assert_array_equal(vol.data[2:7, 5:33, 9:50].compute(), stack[2:7, 5:33, 9:50])
        np.testing.assert_array_equal(vol.data.compute(), stack)


def test_augmentation_in_the_yx_plane_keeps_z(tmp_path):
    import zarr

    z = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((8, 32, 32), np.float32)
    arr = zarr.create_array(str(tmp_path / "a.zarr"), shape=z.shape, chunks=(8, 32, 32),
                            dtype="f4")  # fmt: skip
    arr[...] = z
    s = PatchSampler({"a": arr}, {"a": {"mean": 0.0, "std": 1.0}}, (8, 16, 16),
                     Region((0, 0, 0), z.shape), planes="yx")  # fmt: skip
    try:
        for _ in range(20):
            origin, aug = s.draw()
            assert aug[3] == 0  # rotations about z only
            p = s.read(origin, aug)["a"]
            profile = p[:, 0, 0]
            ramp = np.arange(8)
            assert np.array_equal(profile, ramp) or np.array_equal(profile, ramp[::-1])
    finally:
        s.close()
    # the cubic default rotates z into y and x
    cube = apply_augmentation(np.arange(8.0)[:, None, None] * np.ones((8, 8, 8)), (0, 0, 0, 1, 1))
    assert not np.array_equal(cube[:, 0, 0], np.arange(8.0))
    with pytest.raises(ValueError, match="cubic"):
        PatchSampler({"a": arr}, {"a": {"mean": 0.0, "std": 1.0}}, (8, 16, 16),
                     Region((0, 0, 0), z.shape), planes="all")  # fmt: skip


# --- the 2.5-D network on tiles ---------------------------------------------------------------


class SlicePredictor:
    def __init__(self, slices=5, seed=0):
        torch.manual_seed(seed)
        self.model = SliceUNet(slices=slices, features=4, depth=2).eval()
        with torch.no_grad():
            self.model.head.weight.normal_()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(x))[:, None])[:, 0].numpy()


def test_slice_unet_reach_bounds_an_impulse_probe():
    net = SlicePredictor(slices=5).model
    x = torch.randn(1, 1, 11, 64, 64)
    x2 = x.clone()
    x2[0, 0, 5, 30, 29] += 5.0
    with torch.inference_mode():
        d = (net(x2) - net(x)).abs()[0, 0]
    idx = torch.nonzero(d > 0)
    mz, my, mx = net.receptive_margin
    assert mz == 2 and my == mx == 26  # 6 (2^2 - 1) + 2^3
    assert int(idx[:, 0].min()) == 3 and int(idx[:, 0].max()) == 7  # exactly k // 2 sections
    assert int((idx[:, 1] - 30).abs().max()) <= my
    assert int((idx[:, 2] - 29).abs().max()) <= mx


def test_tiled_slice_unet_matches_whole_volume_prediction():
    rng = np.random.default_rng(3)
    vol = rng.standard_normal((21, 70, 90)).astype(np.float32)
    pred = SlicePredictor(slices=3, seed=1)
    data = da.from_array(vol, chunks=(7, 32, 40))
    halo, margin = plan_halo("auto", pred.model.receptive_margin, 0.0)
    plan = TilePlan(data.shape, data.chunks, halo, margin, pred.model.tile_multiple, "gaussian",
                    0.0)  # fmt: skip
    tiled = overlap_add(data, pred, plan, batch_size=2).compute(scheduler="threads")
    whole = predict_whole(vol, pred, pred.model.tile_multiple, 0.0)
    assert np.sqrt(np.mean((tiled - whole) ** 2) / np.mean(whole**2)) < 1e-4


def test_sublattices_and_ssim():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 1, 2, 4, 4)
    a, b = sublattices(x, "main")
    assert a[0, 0, 0].tolist() == [[0, 2], [8, 10]] and b[0, 0, 0].tolist() == [[5, 7], [13, 15]]
    a, b = sublattices(x, "anti")
    assert a[0, 0, 0].tolist() == [[1, 3], [9, 11]] and b[0, 0, 0].tolist() == [[4, 6], [12, 14]]
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    p = rng.random((1, 1, 2, 40, 40)).astype(np.float32)
    q = (p + 0.1 * rng.standard_normal(p.shape)).astype(np.float32)
    ours = float(ssim2d(torch.from_numpy(p), torch.from_numpy(q), 1.0))
    ref = np.mean([
        structural_similarity(p[0, 0, i], q[0, 0, i], data_range=1.0, gaussian_weights=True,
                              sigma=1.5, use_sample_covariance=False, win_size=9)
        for i in range(2)
    ])  # fmt: skip
    assert ours == pytest.approx(ref, abs=1e-4)


def test_fast_scan_model_is_deterministic_per_section_and_noisier_when_faster():
    slow = _clean_stack((6, 64, 64))
    whole = fast_scan(slow, 4, seed=3)
    parts = np.concatenate([fast_scan(slow[:2], 4, seed=3), fast_scan(slow[2:], 4, seed=3, z0=2)])
    np.testing.assert_array_equal(whole, parts)
    err4 = np.mean((whole.astype(float) - slow) ** 2)
    err8 = np.mean((fast_scan(slow, 8, seed=3).astype(float) - slow) ** 2)
    assert whole.dtype == np.uint8 and err8 > 1.5 * err4


# --- training: supervised and vem-n2n ---------------------------------------------------------


@pytest.fixture
def vem_pair(tmp_path, capsys):
    slow = _clean_stack((10, 128, 128), seed=2)
    fast = fast_scan(slow, 8, seed=5)
    s = _convert(capsys, _tif(tmp_path / "slow.tif", slow), tmp_path / "slow.zarr")
    f = _convert(capsys, _tif(tmp_path / "fast.tif", fast), tmp_path / "fast.zarr")
    return f, s, fast, slow


def _psnr(a: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - ref.astype(float)) ** 2)))


@pytest.mark.parametrize("method", ["supervised", "vem-n2n"])
def test_training_restores_a_fast_scan(method, vem_pair, tmp_path, capsys):
    fast, slow, fast_np, slow_np = vem_pair
    run = tmp_path / "run"
    extra = ["--target", slow] if method == "supervised" else []
    code, _, err = run_cli(
        ["train", fast, "--method", method, "--out", run, "--patch-size", "32",
         "--features", "8", "--depth", "2", "--slices", "3", "--epochs", "2",
         "--steps-per-epoch", "60", "--batch-size", "4", "--val-patches", "2",
         "--no-plots", "--device", "cpu", "--seed", "1", *extra], capsys,
    )  # fmt: skip
    assert code == 0, err
    ck = torch.load(run / "best.pt", weights_only=False)
    assert ck["config"]["augment_planes"] == "auto"
    out = tmp_path / "den.zarr"
    code, _, err = run_cli(
        ["denoise", fast, run / "best.pt", out, "--method", method, "--chunks", "32",
         "--device", "cpu"], capsys,
    )  # fmt: skip
    assert code == 0, err
    vol = open_source(out)
    assert vol.voxel_size_angstrom == (500.0, 40.0, 40.0)
    den = np.asarray(vol.data)
    gain = 3.0 if method == "supervised" else 1.0  # vem-n2n learns from noisy pairs only
    assert _psnr(den, slow_np) > _psnr(fast_np, slow_np) + gain


# --- bad input ------------------------------------------------------------------------------


def _train_fails(capsys, fast, target, tmp_path, *needles):
    run = tmp_path / "bad_run"
    code, _, err = run_cli(
        ["train", fast, "--method", "supervised", "--target", target, "--out", run,
         "--patch-size", "32", "--epochs", "1", "--steps-per-epoch", "1", "--device", "cpu"],
        capsys,
    )  # fmt: skip
    assert code == 1, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("scnet-dask: error")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], err
    assert not run.exists()


def test_supervised_refuses_other_shapes_voxel_sizes_and_unregistered_targets(
    vem_pair, tmp_path, capsys
):
    fast, slow, fast_np, slow_np = vem_pair
    small = _convert(capsys, _tif(tmp_path / "small.tif", slow_np[:, :96]), tmp_path / "sm.zarr")
    _train_fails(capsys, fast, small, tmp_path, "sm.zarr", "shape", "differs")
    other = _convert(
        capsys, _tif(tmp_path / "vox.tif", slow_np, (500.0, 80.0, 80.0)), tmp_path / "vox.zarr"
    )
    _train_fails(capsys, fast, other, tmp_path, "vox.zarr", "voxel size")
    shifted = np.roll(slow_np, (0, 24, -20), axis=(0, 1, 2))
    moved = _convert(capsys, _tif(tmp_path / "moved.tif", shifted), tmp_path / "moved.zarr")
    _train_fails(capsys, fast, moved, tmp_path, "moved.zarr", "not registered")
    unrelated = _clean_stack((10, 128, 128), seed=9)
    alien = _convert(capsys, _tif(tmp_path / "alien.tif", unrelated), tmp_path / "alien.zarr")
    _train_fails(capsys, fast, alien, tmp_path, "alien.zarr", "not registered")


def test_folder_of_slices_of_different_sizes_is_refused(tmp_path, capsys):
    folder = tmp_path / "sl"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", np.zeros((32, 32), np.uint8))
    tifffile.imwrite(folder / "b.tif", np.zeros((32, 40), np.uint8))
    code, _, err = run_cli(["convert", folder, tmp_path / "o.zarr"], capsys)
    assert code == 1 and "b.tif" in err and "differs" in err
    assert not (tmp_path / "o.zarr").exists()


def test_lattice_inference_is_exact_on_tiles():
    from scnet_dask.methods.base import Geometry
    from scnet_dask.methods.vem_n2n import LatticePredictor

    inner_net = SlicePredictor(slices=3, seed=2)

    class Inner:
        geometry = Geometry(inner_net.model.receptive_margin, inner_net.model.tile_multiple)

        def __call__(self, t, seeds=None):
            return inner_net(t)

    lp = LatticePredictor(Inner())
    assert lp.geometry.margin == (1, 52, 52) and lp.geometry.multiple == 8
    vol = np.random.default_rng(0).standard_normal((9, 100, 84)).astype(np.float32)
    data = da.from_array(vol, chunks=(5, 40, 40))
    halo, margin = plan_halo("auto", lp.geometry.margin, 0.0)
    plan = TilePlan(data.shape, data.chunks, halo, margin, 8, "gaussian", 0.0)
    tiled = overlap_add(data, lp, plan).compute(scheduler="threads")
    whole = predict_whole(vol, lp, 8, 0.0)
    assert np.sqrt(np.mean((tiled - whole) ** 2) / np.mean(whole**2)) < 1e-4
    # each output pixel comes from its own lattice: not the full-resolution prediction
    v = vol[None, :, :96, :80]
    assert not np.allclose(lp(v), inner_net(v), atol=1e-3)
