"""Even/odd Noise2Noise and Self2Self with dropout: networks, masks, CLI end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from scnet_dask.io import open_source
from scnet_dask.methods.s2s import keep_mask
from scnet_dask.model.dropout_unet import DropoutUNet
from tests.conftest import run_cli, write_mrc


@pytest.mark.parametrize("depth", [2, 3])
def test_dropout_unet_reach_matches_an_impulse_probe(depth):
    torch.manual_seed(0)
    net = DropoutUNet(features=3, depth=depth, dropout=0.5).eval()
    size = 96 if depth == 3 else 64
    base = net(torch.zeros(1, 1, size, size, size))
    reach = 0
    for off in range(2**depth):
        c = size // 2 + off
        x = torch.zeros(1, 1, size, size, size)
        x[0, 0, c, c, c] = 100.0
        with torch.no_grad():
            idx = ((net(x) - base).abs()[0, 0] > 0).nonzero()
        reach = max(reach, int((idx - c).abs().max()))
    assert reach == net.receptive_margin[0]


def test_dropout_stays_on_with_mc_dropout_only():
    net = DropoutUNet(features=4, depth=2, dropout=0.5).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        net.mc_dropout = True
        assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("block", [1, 4])
def test_keep_mask_statistics(block):
    g = torch.Generator().manual_seed(0)
    m = keep_mask((3, 1, 32, 32, 32), 0.3, block, g)
    assert m.shape == (3, 1, 32, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert abs(1 - float(m.mean()) - 0.3) < 0.03
    if block > 1:  # constant inside every block
        b = m.reshape(3, 1, 8, block, 8, block, 8, block)
        assert torch.equal(b.amin(dim=(3, 5, 7)), b.amax(dim=(3, 5, 7)))


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[Path, Path, Path, np.ndarray]:
    d = tmp_path_factory.mktemp("n2n")
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[0:32, 0:48, 0:48].astype(np.float32)
    clean = (np.sin(x / 4) * np.cos(y / 5) * np.cos(z / 6)).astype(np.float32)
    paths = []
    for name in ("even", "odd"):
        noisy = clean + 0.8 * rng.standard_normal(clean.shape).astype(np.float32)
        src = write_mrc(d / f"{name}.mrc", noisy, voxel=10.0)
        assert run_cli_ok(["convert", src, d / f"{name}.zarr", "--chunks", "16"])
        paths.append(d / f"{name}.zarr")
    return d, paths[0], paths[1], clean


def run_cli_ok(args) -> bool:
    from scnet_dask.cli.app import main

    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return not e.code
    return True


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_n2n_trains_on_halves_and_denoises(halves, capsys):
    d, even, odd, clean = halves
    run = d / "run_n2n"
    code, _, err = run_cli(
        ["train", even, "--odd", odd, "--method", "n2n", "--out", run, "--patch-size", "16",
         "--features", "8", "--epochs", "2", "--steps-per-epoch", "40", "--val-patches", "1",
         "--device", "cpu", "--lr", "2e-3", "--no-plots"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    ck = torch.load(run / "best.pt", weights_only=True)
    assert ck["method"] == "n2n" and set(ck["normalisation"]) == {"even", "odd"}
    out = d / "n2n.zarr"
    code, stdout, err = run_cli(
        ["denoise", even, run / "best.pt", out, "--method", "n2n", "--chunks", "16"], capsys
    )
    assert code == 0, err
    den = np.asarray(open_source(out).data)
    noisy = np.asarray(open_source(even).data)
    assert _corr(den, clean) > _corr(noisy, clean) + 0.1
    prov = zarr.open_group(str(out)).attrs["scnet_dask"]["provenance"][-1]
    assert prov["method"] == "n2n" and prov["train_options"]["odd"].endswith("odd.zarr")


def test_n2n_bad_halves(halves, tmp_path, capsys):
    d, even, _, _ = halves
    other = write_mrc(tmp_path / "o.mrc", np.zeros((32, 48, 40), np.float32), voxel=10.0)
    assert run_cli_ok(["convert", other, tmp_path / "o.zarr", "--chunks", "16"])
    code, _, err = run_cli(
        ["train", even, "--odd", tmp_path / "o.zarr", "--method", "n2n", "--out",
         tmp_path / "r", "--patch-size", "16", "--device", "cpu"],
        capsys,
    )  # fmt: skip
    assert code == 1 and "odd grid (32, 48, 40) differs from the even grid (32, 48, 48)" in err
    assert not (tmp_path / "r").exists()
    code, _, err = run_cli(
        ["train", even, "--method", "n2n", "--out", tmp_path / "r2", "--device", "cpu"], capsys
    )
    assert code == 1 and "--method n2n needs --odd" in err
    coarse = write_mrc(tmp_path / "c.mrc", np.zeros((32, 48, 48), np.float32), voxel=20.0)
    assert run_cli_ok(["convert", coarse, tmp_path / "c.zarr", "--chunks", "16"])
    code, _, err = run_cli(
        ["train", even, "--odd", tmp_path / "c.zarr", "--method", "n2n", "--out",
         tmp_path / "r3", "--patch-size", "16", "--device", "cpu"],
        capsys,
    )  # fmt: skip
    assert code == 1 and "odd voxel size (20.0, 20.0, 20.0) Å differs" in err
    assert not (tmp_path / "r3").exists()


def test_s2s_trains_and_its_ensemble_is_deterministic_and_resumable(halves, capsys, monkeypatch):
    d, even, _, clean = halves
    run = d / "run_s2s"
    code, _, err = run_cli(
        ["train", even, "--method", "s2s", "--out", run, "--patch-size", "16", "--features", "8",
         "--depth", "2", "--epochs", "1", "--steps-per-epoch", "30", "--val-patches", "1",
         "--masks-per-patch", "2", "--device", "cpu", "--lr", "2e-3", "--no-plots"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    args = ["--method", "s2s", "--chunks", "16", "--passes", "6", "--pass-batch", "4"]
    a, b = d / "s2s_a.zarr", d / "s2s_b.zarr"
    assert run_cli(["denoise", even, run / "best.pt", a, *args], capsys)[0] == 0
    # another batching of tiles and passes, and an interrupted run resumed: identical output
    import scnet_dask.distributed.compute as den_mod

    real = den_mod._store_block
    calls = {"n": 0}

    def fails_at_third(*x, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(5, "Input/output error (injected)")
        return real(*x, **k)

    monkeypatch.setattr(den_mod, "_store_block", fails_at_third)
    code, _, err = run_cli(["denoise", even, run / "best.pt", b, *args, "--batch-size", "2"],
                           capsys)  # fmt: skip
    assert code == 1 and "--resume" in err and not b.exists()
    monkeypatch.setattr(den_mod, "_store_block", real)
    code, out, err = run_cli(
        ["denoise", even, run / "best.pt", b, *args, "--batch-size", "2", "--resume"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "resumed" in out and " 0 resumed" not in out
    va, vb = np.asarray(open_source(a).data), np.asarray(open_source(b).data)
    np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-5)
    noisy = np.asarray(open_source(even).data)
    assert _corr(va, clean) > _corr(noisy, clean)
