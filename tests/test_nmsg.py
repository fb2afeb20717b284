"""NMSG (our reconstruction): noise cubes, the noise model, pairs, CLI, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from scipy import ndimage as ndi

from scnet_dask.commands.convert import convert
from scnet_dask.config import ConvertConfig
from scnet_dask.io import open_source
from scnet_dask.methods.nmsg.noise_bank import (
    NoiseBankSpec,
    extract_noise_bank,
    gcbd_scores,
    open_noise_bank,
)
from tests.conftest import run_cli, write_mrc

SIGMA = (1.2, 0.8, 0.8)  # the noise's correlation (Gaussian filter of white noise), voxels


def _noise(shape, seed):
    """Correlated Gaussian noise of a known spectrum, unit std (filter of white noise)."""
    n = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), SIGMA)
    return (n / 0.176).astype(np.float32)  # 0.176: about the filtered field's std


def _clean(shape):
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    c = np.zeros(shape, np.float32)
    for cz, cy, cx in ((12, 14, 14), (20, 30, 70), (30, 70, 20), (16, 75, 75)):
        c += 2.5 * (((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) < 30)
    return ndi.gaussian_filter(c, 1.0)


@pytest.fixture(scope="module")
def tomo(tmp_path_factory):
    d = tmp_path_factory.mktemp("nmsg")
    shape = (40, 96, 96)
    clean = _clean(shape)
    noisy = clean + _noise(shape, 1) + 3.0
    n = d / "noisy.zarr"
    convert(
        ConvertConfig(input=write_mrc(d / "noisy.mrc", noisy, voxel=8.0), output=n, chunks=16),
        show_progress=False,
    )
    return d, n, clean, noisy


def test_gcbd_scores_separate_noise_from_an_edge():
    rng = np.random.default_rng(0)
    flat = rng.standard_normal((20, 16, 16, 16))
    edge = flat.copy()
    edge[:, :, :, 8:] += 2.0  # a step through every cube
    md_f, vd_f = gcbd_scores(flat)
    md_e, vd_e = gcbd_scores(edge)
    assert np.all(md_e > 3 * np.median(md_f)) and np.median(vd_e) > np.median(vd_f)


def test_noise_cubes_hold_the_noise_not_the_structure(tomo, tmp_path):
    _, n, _, noisy = tomo
    std = float(noisy.std())
    rep = extract_noise_bank(n, tmp_path / "bank.zarr", NoiseBankSpec(cube=12, min_cubes=32), std)
    cubes = open_noise_bank(tmp_path / "bank.zarr")
    assert rep["found"] == len(cubes) >= 32 and rep["level"] >= 1
    origins = np.asarray(zarr.open_array(str(tmp_path / "bank.zarr")).attrs["origins"])
    clean = _clean(noisy.shape)
    # the chosen cubes miss the structure: their clean content is nearly flat
    spread = [np.ptp(clean[z : z + 12, y : y + 12, x : x + 12]) for z, y, x in origins]
    assert np.median(spread) < 0.1 * np.ptp(clean)
    # in the volume's normalised units: std of the noise / std of the volume
    assert abs(np.std(cubes) - 1.0 / std) < 0.1 / std
    # reused when asked again with the same settings; refused with others
    again = extract_noise_bank(n, tmp_path / "bank.zarr", NoiseBankSpec(cube=12, min_cubes=32), std)
    assert again == rep
    from scnet_dask.errors import InputError

    with pytest.raises(InputError, match="another volume or other settings"):
        extract_noise_bank(n, tmp_path / "bank.zarr", NoiseBankSpec(cube=16, min_cubes=32), std)


def test_too_few_smooth_cubes_and_a_too_small_volume_are_refused(tomo, tmp_path):
    from scnet_dask.errors import InputError

    _, n, _, noisy = tomo
    strict = NoiseBankSpec(cube=12, rule="gcbd", mu=0.01, gamma=0.01, min_cubes=8)
    with pytest.raises(InputError, match="only 0 smooth 12³ cubes.*noise_bank.mu"):
        extract_noise_bank(n, tmp_path / "b.zarr", strict, float(noisy.std()))
    assert not (tmp_path / "b.zarr").exists()
    with pytest.raises(InputError, match="smaller than one 64³ noise cube"):
        extract_noise_bank(n, tmp_path / "b.zarr", NoiseBankSpec(cube=64), 1.0)


def _train(n, out, capsys, *extra, gan=None, noise_bank=None):
    """``train --method nmsg`` with the expert sections written to a ``--config`` file."""
    sections = {
        "noise_bank": {"cube": 12, "min_cubes": 32, **(noise_bank or {})},
        "gan": {"features": 8, "batch": 16, **(gan or {})},
    }
    cfg = Path(str(out) + ".yaml")
    cfg.write_text(yaml.safe_dump(sections))
    return run_cli(
        ["train", n, "--method", "nmsg", "--out", out, "--patch-size", "16", "--features", "8",
         "--batch-size", "2", "--val-patches", "1", "--device", "cpu", "--no-plots",
         "--config", cfg, *extra],
        capsys,
    )  # fmt: skip


def test_noise_model_phase_writes_its_diagnostics(tomo, tmp_path, capsys):
    """Smoke: a 5-step noise-model phase ends with noise_model.json of finite figures.

    How well the model matches a known spectrum (within 10 % per band after 300 steps) is
    measured by ``benchmarks/nmsg_noise_model.py``, not here.
    """
    _, n, _, _ = tomo
    run = tmp_path / "run"
    code, _, err = _train(
        n, run, capsys, "--epochs", "1", "--steps-per-epoch", "7", gan={"steps": 5}
    )
    assert code == 0, err
    diag = json.loads((run / "noise_model.json").read_text())
    assert diag["step"] == 5 and np.isfinite(diag["max_band_error"])
    assert np.isfinite(diag["wasserstein"]) and len(diag["band_error"]) > 0
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["options"]["gan"]["steps"] == 5 and ck["options"]["noise_bank"]["cube"] == 12


def test_legacy_flat_nmsg_options_load_into_their_sections():
    from scnet_dask.methods.nmsg.options import LEGACY_KEYS, NmsgTrainOptions

    flat = {"noise_cube": 12, "noise_min_cubes": 8, "gan_steps": 6, "gan_lr": 0.01}
    flat["gp_weight"] = 3.0
    o = NmsgTrainOptions(**flat)
    assert (o.noise_bank.cube, o.noise_bank.min_cubes) == (12, 8)
    assert (o.gan.steps, o.gan.lr, o.gan.gp_weight) == (6, 0.01, 3.0)
    # every legacy name lands on a real field of its section
    for section, field in LEGACY_KEYS.values():
        assert field in type(getattr(o, section)).model_fields, (section, field)


def test_nmsg_trains_resumes_and_denoises_through_the_cli(tomo, tmp_path, capsys):
    _, n, clean, noisy = tomo
    run = tmp_path / "run"
    args = ("--steps-per-epoch", "30", "--lr", "2e-3", "--pair-form", "noisier2noise",
            "--no-upsample")  # fmt: skip
    code, _, err = _train(n, run, capsys, "--epochs", "1", *args, gan={"steps": 40})  # in GAN
    assert code == 0 and "trains the noise model only" in err, err
    assert not (run / "noise_model.json").exists()
    bank_mtime = (run / "noise.zarr" / "zarr.json").stat().st_mtime
    code, _, err = _train(n, run, capsys, "--epochs", "3", "--resume", *args, gan={"steps": 40})
    assert code == 0, err
    assert (run / "noise.zarr" / "zarr.json").stat().st_mtime == bank_mtime  # reused
    assert json.loads((run / "noise_model.json").read_text())["step"] == 40
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["step"] == 90 and set(ck["networks"]) == {"model", "generator", "critic"}
    rows = (run / "log.csv").read_text().splitlines()
    assert len(rows) == 91  # header + one row per step, none repeated by the resume
    out = tmp_path / "den.zarr"
    code, _, err = run_cli(
        ["denoise", n, run / "best.pt", out, "--method", "nmsg", "--chunks", "16",
         "--passes", "2"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    den = np.asarray(open_source(out).data)
    assert den.shape == noisy.shape and np.isfinite(den).all()
    # 90 steps are too few for a useful denoiser (quality: benchmarks/quality.py); the output
    # must still follow the input, on its scale
    assert np.corrcoef(den.ravel(), noisy.ravel())[0, 1] > 0.3
    assert abs(den.mean() - noisy.mean()) < 0.2 * noisy.std()
    prov = zarr.open_group(str(out)).attrs["scnet_dask"]["provenance"][-1]
    assert prov["method"] == "nmsg" and prov["passes"] == 2


def test_nmsg_bad_input(tomo, tmp_path, capsys):
    d, n, _, _ = tomo
    run = tmp_path / "r"
    code, _, err = _train(n, run, capsys, noise_bank={"rule": "gcbd", "mu": 0.01, "gamma": 0.01})
    assert code == 1 and "smooth 12³ cubes" in err and len(err.strip().splitlines()) == 1
    assert not run.exists()
    code, _, err = _train(n, run, capsys, noise_bank={"cube": 64})
    assert code == 1 and "smaller than one 64³ noise cube" in err and not run.exists()
    # a checkpoint of another method
    other = tmp_path / "n2v"
    code, _, err = run_cli(
        ["train", n, "--method", "n2v", "--out", other, "--patch-size", "16", "--features", "4",
         "--epochs", "1", "--steps-per-epoch", "2", "--val-patches", "1", "--device", "cpu",
         "--no-plots"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(
        ["denoise", n, other / "best.pt", tmp_path / "x.zarr", "--method", "nmsg"], capsys
    )
    assert code == 1 and "a n2v checkpoint, but --method nmsg" in err
    assert not (tmp_path / "x.zarr").exists()
    assert not Path(str(tmp_path / "x.zarr") + ".partial").exists()


def test_a_volume_with_too_few_candidate_cubes_gets_advice_that_can_help(tomo, tmp_path):
    """B31: when fewer cubes exist than needed, raising the tolerance cannot help: say so."""
    from scnet_dask.errors import InputError

    _, n, _, noisy = tomo
    spec = NoiseBankSpec(cube=16, min_cubes=1500, max_cubes=2000)
    with pytest.raises(InputError, match="offers only .* lower noise_bank.min_cubes"):
        extract_noise_bank(n, tmp_path / "b.zarr", spec, float(noisy.std()))
