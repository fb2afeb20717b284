"""The BM4D and Noise2Void baselines on the denoise/train pipeline."""

from __future__ import annotations

import dask.array as da
import mrcfile
import numpy as np
import pytest
import zarr

from scnet_dask.io import open_source
from scnet_dask.science.stats import estimate_noise_sigma
from tests.conftest import run_cli, write_mrc


def _clean(shape):
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    return (np.sin(x / 4) * np.cos(y / 5) + np.sin(z / 4)).astype(np.float32)


def test_noise_sigma_estimate_from_chunks():
    rng = np.random.default_rng(0)
    clean = _clean((48, 64, 64))
    for sigma in (0.2, 0.6):
        noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
        est = estimate_noise_sigma(da.from_array(noisy, chunks=16))
        assert est == pytest.approx(sigma, rel=0.1)
    with pytest.raises(ValueError, match="expected a"):
        estimate_noise_sigma(da.zeros((4, 4)))


def test_bm4d_smoke_denoises_a_small_volume(tmp_path, capsys):
    """The default run's BM4D check: a 16 x 24 x 24 volume, tiles blended, better than input."""
    pytest.importorskip("bm4d")
    rng = np.random.default_rng(4)
    clean = _clean((16, 24, 24))
    noisy = (clean + 0.5 * rng.standard_normal(clean.shape)).astype(np.float32)
    src = write_mrc(tmp_path / "n.mrc", noisy)
    out = tmp_path / "b.zarr"
    code, _, err = run_cli(
        ["denoise", src, out, "--method", "bm4d", "--chunks", "16", "--noise-sigma", "0.5"], capsys
    )
    assert code == 0, err
    got = np.asarray(open_source(out).data)
    assert np.isfinite(got).all() and got.std() > 0
    assert np.mean((got - clean) ** 2) < np.mean((noisy - clean) ** 2)


@pytest.mark.slow  # whole-volume BM4D as the reference: over a minute on 2 cores
def test_bm4d_tiled_matches_whole_volume_and_denoises(tmp_path, capsys):
    bm4d = pytest.importorskip("bm4d")
    rng = np.random.default_rng(1)
    clean = _clean((24, 40, 40))
    noisy = clean + 0.5 * rng.standard_normal(clean.shape).astype(np.float32)
    src = write_mrc(tmp_path / "v.mrc", noisy, voxel=10.0)
    out = tmp_path / "b.zarr"
    code, _, err = run_cli(
        ["denoise", src, out, "--method", "bm4d", "--chunks", "16", "--noise-sigma", "0.5"], capsys
    )
    assert code == 0, err
    got = np.asarray(open_source(out).data)
    whole = np.asarray(bm4d.bm4d(noisy, 0.5), np.float32)
    mse = lambda a: float(np.mean((a - clean) ** 2))  # noqa: E731
    assert mse(got) < 0.3 * mse(noisy)
    # blended tiles, not exact: within a few % of the whole-volume result
    assert np.sqrt(np.mean((got - whole) ** 2) / np.mean((whole - whole.mean()) ** 2)) < 0.05
    prov = zarr.open_group(str(out)).attrs["scnet_dask"]["provenance"][-1]
    assert prov["method"] == "bm4d" and prov["noise_sigma"] == 0.5
    assert prov["noise_sigma_source"] == "given"
    # estimated σ when none is given (recorded in the provenance)
    code, _, err = run_cli(["denoise", src, tmp_path / "e.mrc", "--method", "bm4d"], capsys)
    assert code == 0, err
    est = np.asarray(mrcfile.read(tmp_path / "e.mrc"))
    assert mse(est) < 0.5 * mse(noisy)


@pytest.fixture(scope="module")
def n2v_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("n2v")
    rng = np.random.default_rng(2)
    noisy = _clean((32, 48, 48)) + 0.7 * rng.standard_normal((32, 48, 48)).astype(np.float32)
    src = write_mrc(d / "noisy.mrc", noisy, voxel=10.0)
    return d, src


def test_n2v_trains_without_prior_and_denoises(n2v_run, capsys):
    d, src = n2v_run
    code, _, err = run_cli(["convert", src, d / "n.zarr", "--chunks", "16"], capsys)
    assert code == 0, err
    code, out, err = run_cli(
        ["train", d / "n.zarr", "--method", "n2v", "--out", d / "run", "--epochs", "1",
         "--steps-per-epoch", "40", "--patch-size", "16", "--features", "4",
         "--val-patches", "1", "--device", "cpu", "--lr", "2e-3"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    import csv

    with open(d / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    assert "smooth" not in rows[0] and all(float(r["total"]) == float(r["rec"]) for r in rows)
    ckpt = d / "run" / "best.pt"
    from scnet_dask.model.checkpoint import load_checkpoint

    data = load_checkpoint(ckpt)
    opts = data["options"]
    assert data["method"] == "n2v" and data["config"]["method"] == "n2v"
    assert opts["swap_size"] == 1 and opts["swap_ratio"] == 0.002 and "prior" not in opts
    # an n2v checkpoint is refused for --method scnet, with the fix in the message
    code, _, err = run_cli(["denoise", src, ckpt, d / "x.zarr", "--chunks", "16"], capsys)
    assert code != 0 and "pass --method n2v" in err and not (d / "x.zarr").exists()
    code, _, err = run_cli(
        ["denoise", src, ckpt, d / "o.zarr", "--method", "n2v", "--chunks", "16", "--device",
         "cpu"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    prov = zarr.open_group(str(d / "o.zarr")).attrs["scnet_dask"]["provenance"][-1]
    assert prov["method"] == "n2v" and prov["post_sigma_voxels"] == 0.0
    den = np.asarray(open_source(d / "o.zarr").data)
    noisy = np.asarray(open_source(src).data)
    clean = _clean(noisy.shape)
    assert np.isfinite(den).all() and den.shape == noisy.shape
    # not a constant and not the input: a denoiser's output, closer to the truth than the input
    assert den.std() > 0.2 * clean.std() and not np.allclose(den, noisy, atol=1e-3)
    r = lambda a: float(np.corrcoef(a.ravel(), clean.ravel())[0, 1])  # noqa: E731
    assert r(den) > r(noisy), (r(den), r(noisy))


def test_scnet_training_needs_a_prior(n2v_run, capsys):
    d, src = n2v_run
    code, _, err = run_cli(["train", src, "--out", d / "r2"], capsys)
    assert code != 0 and "--method scnet needs --prior" in err
