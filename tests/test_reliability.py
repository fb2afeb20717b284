"""Results that could be silently wrong are refused or warned about (issue 26's rows)."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from scnet_dask.io import open_source
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import structured


@pytest.fixture(scope="module")
def vols(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    a = write_mrc(d / "a.mrc", structured((32, 48, 48), seed=1), voxel=10.0)
    b = write_mrc(d / "b.mrc", structured((32, 48, 48), seed=2), voxel=10.0)
    return d, a, b


def _zarr(capsys, src, out):
    code, _, err = run_cli(["convert", src, out, "--chunks", "16"], capsys)
    assert code == 0, err
    return out


def test_float16_export_beyond_its_range_is_refused(tmp_path, capsys):
    """B8: values > 65504 would become Inf; MRC inputs carry no stored statistics."""
    big = write_mrc(tmp_path / "big.mrc", np.full((4, 8, 8), 1e5, np.float32))
    out = tmp_path / "h.mrc"
    code, _, err = run_cli(["export", big, out, "--dtype", "float16"], capsys)
    assert code == 1 and "100000" in err and "float16" in err and not out.exists()
    ok = write_mrc(tmp_path / "ok.mrc", np.full((4, 8, 8), 3.0, np.float32))
    assert run_cli(["export", ok, tmp_path / "ok16.mrc", "--dtype", "float16"], capsys)[0] == 0


def test_uint8_to_mrc_reports_what_was_written(tmp_path, capsys):
    """B19: MRC has no uint8 mode: the summary says uint16, a warning says why."""
    import tifffile

    src = tmp_path / "u8.tif"
    data = np.arange(6 * 8 * 8, dtype=np.uint16).reshape(6, 8, 8) % 256
    tifffile.imwrite(src, data.astype(np.uint8), photometric="minisblack")
    z = tmp_path / "u8.zarr"
    assert run_cli(["convert", src, z, "--dtype", "source", "--voxel-size", "10"], capsys)[0] == 0
    code, out, err = run_cli(["export", z, tmp_path / "u8.mrc", "--dtype", "source"], capsys)
    assert code == 0, err
    assert out.strip().endswith(") uint16")
    assert "no unsigned 8-bit mode" in err
    with mrcfile.open(tmp_path / "u8.mrc") as m:
        assert m.data.dtype == np.uint16 and int(m.data.max()) == 255


def test_lowpass_needs_a_real_voxel_size(tmp_path, capsys):
    """B20: voxel size 0 is refused in one line; B14: a 1 Å placeholder is warned about."""
    zero = write_mrc(tmp_path / "z.mrc", structured((16, 32, 32)), voxel=0.0)
    code, _, err = run_cli(["denoise", zero, tmp_path / "z.zarr", "--method", "lowpass"], capsys)
    assert code == 1 and "needs the voxel size" in err and "internal error" not in err
    assert not (tmp_path / "z.zarr").exists()
    one = write_mrc(tmp_path / "one.mrc", structured((16, 32, 32)), voxel=1.0)
    code, _, err = run_cli(["denoise", one, tmp_path / "o.zarr", "--method", "lowpass"], capsys)
    assert code == 0 and "placeholder" in err and "40" in err and str(one) in err


def test_simulate_with_too_few_tilts_leaves_nothing(tmp_path, capsys):
    """B22: --tilts 0:0:1 is one tilt: a one-line error, no half-written folder."""
    src = write_mrc(tmp_path / "v.mrc", structured((16, 32, 32)))
    out = tmp_path / "sim"
    code, _, err = run_cli(["simulate", src, out, "--tilts", "0:0:1"], capsys)
    assert code == 1 and "at least 3" in err and "internal error" not in err
    assert not out.exists()


def test_a_yaml_list_where_a_number_belongs(tmp_path, capsys, vols):
    """B23: ``chunks: [16, 16]`` names the key and the file, no internal error."""
    _, a, _ = vols
    cfg = tmp_path / "c.yaml"
    cfg.write_text("chunks: [16, 16]\n")
    code, _, err = run_cli(["convert", a, tmp_path / "x.zarr", "--config", cfg], capsys)
    assert code == 2 and "'chunks'" in err and str(cfg) in err and "internal error" not in err


def _train(capsys, vol, run, *extra):
    return run_cli(
        ["train", vol, "--out", run, "--patch-size", "16", "--features", "4",
         "--steps-per-epoch", "3", "--val-patches", "1", "--device", "cpu", "--no-plots",
         *extra],
        capsys,
    )  # fmt: skip


def test_resume_refuses_another_input_volume(tmp_path, capsys, vols):
    """B9: ``train --resume`` on another NOISY volume is refused, the checkpoint untouched."""
    _, a, b = vols
    za, zb = _zarr(capsys, a, tmp_path / "a.zarr"), _zarr(capsys, b, tmp_path / "b.zarr")
    run = tmp_path / "run"
    code, _, err = _train(capsys, za, run, "--method", "n2v", "--epochs", "1")
    assert code == 0, err
    before = (run / "last.pt").read_bytes()
    code, _, err = _train(capsys, zb, run, "--method", "n2v", "--epochs", "2", "--resume")
    assert code == 1 and "another noisy volume" in err and (run / "last.pt").read_bytes() == before
    # the same input continues (a constant rate: more epochs simply continue the run)
    code, _, err = _train(capsys, za, run, "--method", "n2v", "--epochs", "2", "--resume")
    assert code == 0, err


def test_resume_with_another_length_of_a_cosine_run_is_refused(tmp_path, capsys, vols):
    """R49: the cosine decay spans the planned run; resuming with more epochs is refused."""
    _, a, _ = vols
    za = _zarr(capsys, a, tmp_path / "a.zarr")
    prior = tmp_path / "p.zarr"
    assert run_cli(["prior", za, prior], capsys)[0] == 0
    run = tmp_path / "run"
    args = ("--prior", str(prior), "--lr-schedule", "cosine")
    code, _, err = _train(capsys, za, run, *args, "--epochs", "1")
    assert code == 0, err
    code, _, err = _train(capsys, za, run, *args, "--epochs", "2", "--resume")
    assert code == 1 and "resume with --epochs 1" in err


def test_no_validation_and_no_checkpoint_are_said_plainly(tmp_path, capsys, vols):
    """B35: no "inf" for a validation loss that was never computed."""
    _, a, _ = vols
    za = _zarr(capsys, a, tmp_path / "a.zarr")
    code, out, err = run_cli(
        ["train", za, "--method", "n2v", "--out", tmp_path / "r", "--patch-size", "16",
         "--features", "4", "--epochs", "1", "--steps-per-epoch", "2", "--val-patches", "0",
         "--device", "cpu", "--no-plots"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "validation loss none" in out and " inf" not in out and "nan" not in out


def test_a_resume_that_must_start_over_says_so(tmp_path, capsys, vols):
    """B36: a partial output from other settings is not continued silently."""
    _, a, _ = vols
    out = tmp_path / "g.zarr"
    partial = tmp_path / ".g.zarr.partial"
    import scnet_dask.distributed.compute as compute

    real = compute._store_block
    calls = {"n": 0}

    def fail_third(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk hiccup")
        return real(*args, **kw)

    compute._store_block = fail_third
    try:
        code, _, _ = run_cli(["denoise", a, out, "--method", "gaussian", "--chunks", "16"], capsys)
    finally:
        compute._store_block = real
    assert code == 1 and partial.exists()
    code, _, err = run_cli(
        ["denoise", a, out, "--method", "gaussian", "--sigma", "2", "--chunks", "16", "--resume"],
        capsys,
    )  # fmt: skip
    assert code == 0 and "starting over" in err
    assert np.isfinite(np.asarray(open_source(out).data)).all()


def test_damaged_checkpoint_weights_are_refused_at_load(tmp_path, capsys, vols):
    """B5 / B29: a flipped bit or NaN weights: one line at load, not a NaN output."""
    import torch

    from tests.test_denoise import make_checkpoint

    _, a, _ = vols
    ck = make_checkpoint(tmp_path / "c.pt", features=4, voxel=10.0)
    data = torch.load(ck, weights_only=True)
    assert "networks_sha256" in data
    net = data["networks"]["model"]
    key = next(k for k, v in net.items() if v.is_floating_point() and v.numel() > 4)
    flipped = dict(data)
    w = net[key].clone()
    w.view(-1)[3] = w.view(-1)[3] * 1.5  # a changed weight, still finite
    flipped["networks"] = {"model": {**net, key: w}}
    torch.save(flipped, tmp_path / "flip.pt")
    code, _, err = run_cli(["denoise", a, tmp_path / "flip.pt", tmp_path / "o.zarr"], capsys)
    assert code == 1 and "do not match their stored SHA-256" in err
    assert not (tmp_path / "o.zarr").exists()
    nan = dict(data)
    w = net[key].clone()
    w.view(-1)[0] = float("nan")
    nan["networks"] = {"model": {**net, key: w}}
    nan.pop("networks_sha256")
    torch.save(nan, tmp_path / "nan.pt")
    code, _, err = run_cli(["denoise", a, tmp_path / "nan.pt", tmp_path / "n.zarr"], capsys)
    assert code == 1 and "non-finite weights" in err and f"model.{key}" in err


def test_a_volume_in_other_units_than_the_training_data_is_warned_about(tmp_path, capsys):
    """B3: a tomogram scaled by 100 and shifted, denoised with a checkpoint of the original."""
    from tests.test_denoise import make_checkpoint

    vol = structured((32, 48, 48), seed=6)
    ck = make_checkpoint(tmp_path / "c.pt", features=4, voxel=10.0, mean=float(vol.mean()),
                         std=float(vol.std()))  # fmt: skip
    same = write_mrc(tmp_path / "same.mrc", vol, voxel=10.0)
    code, _, err = run_cli(["denoise", same, ck, tmp_path / "a.zarr", "--chunks", "16"], capsys)
    assert code == 0 and "unlike" not in err, err
    scaled = write_mrc(tmp_path / "scaled.mrc", vol * 100 + 500, voxel=10.0)
    code, _, err = run_cli(["denoise", scaled, ck, tmp_path / "b.zarr", "--chunks", "16"], capsys)
    assert code == 0 and "unlike those" in err and str(scaled) in err
    assert f"{vol.std():.4g}" in err  # both figures: the volume's and the training data's
    assert "--normalise input" in err
    # --normalise input: the same network in the scaled volume's own units, no warning
    for name, src in (("c", same), ("d", scaled)):
        code, _, err = run_cli(
            ["denoise", src, ck, tmp_path / f"{name}.zarr", "--chunks", "16",
             "--normalise", "input"], capsys,
        )  # fmt: skip
        assert code == 0 and "unlike" not in err, err
    c = open_source(tmp_path / "c.zarr").data.compute()
    d = open_source(tmp_path / "d.zarr").data.compute()
    np.testing.assert_allclose(d, c * 100 + 500, rtol=1e-3, atol=0.05 * float(c.std()) * 100)


def test_a_prior_of_a_volume_with_nan_is_refused(tmp_path, capsys):
    """B15: a Zarr holding NaN gives no NaN prior with exit 0."""
    vol = structured((16, 32, 32), seed=7)
    vol[3, 4, 5] = np.nan
    src = write_mrc(tmp_path / "nan.mrc", vol)
    z = tmp_path / "nan.zarr"
    assert run_cli(["convert", src, z, "--nan-policy", "zero"], capsys)[0] == 0  # fine: replaced
    import zarr

    g = zarr.open_group(str(z), mode="r+")
    g["0"][3, 4, 5] = np.nan  # a store written elsewhere, holding NaN and saying so
    attrs = dict(g.attrs["scnet_dask"])
    attrs["statistics"] = {**attrs["statistics"], "n_nonfinite": 1}
    g.attrs["scnet_dask"] = attrs
    code, _, err = run_cli(["prior", z, tmp_path / "p.zarr"], capsys)
    assert code == 1 and "NaN/Inf" in err and not (tmp_path / "p.zarr").exists()


def test_evaluate_rows_that_would_share_files_are_refused(tmp_path, capsys):
    """B18: "Gauss 1" and "gauss-1" would write the same kept volume."""
    src = write_mrc(tmp_path / "n.mrc", structured((16, 32, 32), seed=8))
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        f"noisy: {src}\nout_dir: {tmp_path / 'ev'}\nmethods:\n"
        "  - {name: Gauss 1, method: gaussian, sigma: 1}\n"
        "  - {name: gauss-1, method: gaussian, sigma: 2}\n"
    )
    code, _, err = run_cli(["evaluate", cfg], capsys)
    assert code == 1 and "'Gauss 1' and 'gauss-1'" in err


def test_another_methods_option_in_yaml_names_the_file(tmp_path, capsys, vols):
    """B32: the refusal names the YAML file, the option and the method."""
    _, a, _ = vols
    za = _zarr(capsys, a, tmp_path / "a.zarr")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("lambda_smooth: 0.1\n")
    code, _, err = run_cli(
        ["train", za, "--method", "n2v", "--out", tmp_path / "r", "--config", cfg], capsys
    )
    assert code == 1 and str(cfg) in err
    assert "lambda_smooth: not an option of train --method n2v" in err
    assert not (tmp_path / "r").exists()


def test_a_constant_output_is_an_error_not_exit_0(tmp_path, capsys):
    """A collapsed model (every weight 0) gives a constant volume: refused, nothing written."""
    import torch

    from scnet_dask.methods.scnet import write_checkpoint
    from scnet_dask.model.unet import SCNetUNet

    net = SCNetUNet(features=4, upsample=True)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    vol = structured((32, 48, 48), seed=9)
    norm = {"noisy": {"mean": float(vol.mean()), "std": float(vol.std()),
                      "voxel_size_angstrom": [10.0] * 3}}  # fmt: skip
    write_checkpoint(tmp_path / "flat.pt", net, norm, {})
    src = write_mrc(tmp_path / "v.mrc", vol, voxel=10.0)
    for out in (tmp_path / "o.zarr", tmp_path / "o.mrc"):
        code, _, err = run_cli(
            ["denoise", src, tmp_path / "flat.pt", out, "--chunks", "16", "--post-sigma", "0"],
            capsys,
        )  # fmt: skip
        assert code == 1 and "is constant" in err and not out.exists(), err
        assert not list(tmp_path.glob(f".{out.name}*"))  # no partial, markers or work store


def test_an_output_with_nan_is_refused():
    from pathlib import Path

    from scnet_dask.commands.denoise import _check_output
    from scnet_dask.errors import InputError

    with pytest.raises(InputError, match="3 NaN/Inf voxels"):
        _check_output(Path("o.zarr"), {"n_nonfinite": 3, "std": 1.0}, None)  # type: ignore[arg-type]


def test_evaluate_names_only_the_files_it_wrote(tmp_path, capsys):
    """B35: no fsc.png is claimed without even/odd halves."""
    src = write_mrc(tmp_path / "n.mrc", structured((16, 32, 32), seed=10))
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        f"noisy: {src}\nout_dir: {tmp_path / 'ev'}\nmethods:\n"
        "  - {name: gauss, method: gaussian, sigma: 1}\n"
    )
    code, out, err = run_cli(["evaluate", cfg], capsys)
    assert code == 0, err
    assert not (tmp_path / "ev" / "fsc.png").exists() and "fsc.png" not in out
    assert "results.csv" in out


def test_info_counts_nan_voxels_of_every_format(tmp_path, capsys):
    """info reports NaN/Inf: counted with --scan for MRC/TIFF, stored for converted Zarr."""
    import json

    import tifffile

    vol = structured((8, 16, 16), seed=9)
    vol[1, 2, 3] = np.nan
    vol[4, 5, 6] = np.inf
    vol[7, 0, 0] = np.nan
    mrc = write_mrc(tmp_path / "a.mrc", vol, voxel=10.0)
    tif = tmp_path / "a.tif"
    tifffile.imwrite(tif, vol)
    for src in (mrc, tif):
        code, out, _ = run_cli(["info", src], capsys)
        assert code == 0 and "NaN/Inf voxels:    not counted (info --scan" in out
        code, out, _ = run_cli(["info", src, "--scan"], capsys)
        assert code == 0 and "NaN/Inf voxels:    3 (denoise" in out, out
        code, out, _ = run_cli(["info", src, "--scan", "--json"], capsys)
        assert json.loads(out)["statistics"]["n_nonfinite"] == 3
    code, _, _ = run_cli(["convert", mrc, tmp_path / "z.zarr", "--nan-policy", "zero"], capsys)
    assert code == 0
    code, out, _ = run_cli(["info", tmp_path / "z.zarr"], capsys)
    assert code == 0 and "NaN/Inf voxels:    0" in out, out
