from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import mrcfile
import numpy as np
import pytest
import torch
import zarr
from dask_image.ndfilters import gaussian_filter

from scnet_dask.io import open_source
from scnet_dask.methods._unet import network_predictor
from scnet_dask.methods.runtime import file_sha256
from scnet_dask.methods.scnet import write_checkpoint
from scnet_dask.model.unet import SCNetUNet
from scnet_dask.tiling.graph import predict_whole
from tests.conftest import run_cli, sha256, write_mrc


def structured(shape, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]].astype(np.float32)
    return (
        np.sin(x / 5) * np.cos(y / 7) + np.sin(z / 6) + 0.5 * rng.standard_normal(shape)
    ).astype(np.float32)


def make_checkpoint(path: Path, features=2, voxel=7.5, mean=0.1, std=1.2, seed=0) -> Path:
    torch.manual_seed(seed)
    model = SCNetUNet(features=features, upsample=True)
    norm = {"noisy": {"mean": mean, "std": std, "voxel_size_angstrom": [voxel] * 3}}
    write_checkpoint(path, model, norm, {"test": True})
    return path


@pytest.fixture
def vol_mrc(tmp_path):
    return write_mrc(tmp_path / "vol.mrc", structured((40, 56, 48)), labels=("sample label",))


@pytest.fixture
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "best.pt")


def test_denoise_zarr_matches_whole_volume_and_keeps_metadata(vol_mrc, ckpt, tmp_path, capsys):
    before = sha256(vol_mrc)
    out = tmp_path / "den.ome.zarr"
    code, stdout, err = run_cli(
        ["denoise", vol_mrc, ckpt, out, "--chunks", "16", "--device", "cpu", "--batch-size", "2"],
        capsys,
    )
    assert code == 0, err
    assert "wrote" in stdout
    assert sha256(vol_mrc) == before
    res = open_source(out)
    assert res.voxel_size_angstrom == pytest.approx((7.5, 7.5, 7.5))
    got = np.asarray(res.data)
    vol = np.asarray(mrcfile.read(vol_mrc), dtype=np.float32)
    whole = predict_whole(vol, network_predictor(ckpt), 16, 0.5)
    assert np.sqrt(np.mean((got - whole) ** 2) / np.mean(whole**2)) < 1e-4
    group = zarr.open_group(str(out), mode="r")
    assert sorted(group.array_keys()) == ["0", "1", "2"]
    prov = group.attrs["scnet_dask"]["provenance"][-1]
    assert prov["step"] == "denoise" and prov["checkpoint_sha256"] == file_sha256(ckpt)
    assert prov["train_options"]["features"] == 2 and prov["scnet_dask_version"]
    assert any(
        lab.startswith("sample label") for lab in group.attrs["scnet_dask"]["source"]["labels"]
    )
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no work files left


def test_denoise_to_mrc_and_gaussian_method_is_exact(vol_mrc, tmp_path, capsys):
    out = tmp_path / "g.mrc"
    code, _, err = run_cli(
        ["denoise", vol_mrc, out, "--method", "gaussian", "--sigma", "1.5", "--chunks", "16"],
        capsys,
    )
    assert code == 0, err
    vol = np.asarray(mrcfile.read(vol_mrc), dtype=np.float32)
    ref = gaussian_filter(da.from_array(vol), 1.5, mode="reflect").compute()
    with mrcfile.open(out) as m:
        np.testing.assert_allclose(m.data, ref, rtol=0, atol=1e-5)
        assert float(m.voxel_size.x) == pytest.approx(7.5)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def _cmd(args):
    return [sys.executable, "-m", "scnet_dask.cli", *map(str, args)]


def test_resume_after_kill_recomputes_only_missing_chunks(tmp_path):
    vol = write_mrc(tmp_path / "v.mrc", structured((48, 64, 64), seed=1))
    ck = make_checkpoint(tmp_path / "c.pt", features=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref.zarr"
    subprocess.run(
        _cmd(["denoise", vol, ck, ref, "--chunks", "16", "--device", "cpu"]),
        check=True,
        env=env,
        capture_output=True,
    )
    out = tmp_path / "out.zarr"
    args = ["denoise", vol, ck, out, "--chunks", "16", "--device", "cpu"]
    proc = subprocess.Popen(
        _cmd(args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    done = tmp_path / ".out.zarr.partial.done"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(done.glob("*"))) < 8 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_done = len(list(done.glob("*")))
    assert 8 <= n_done < 48, n_done
    assert not out.exists()
    r = subprocess.run(_cmd([*args, "--resume"]), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{48 - n_done} chunks computed, {n_done} resumed" in r.stdout
    a = zarr.open_group(str(ref), mode="r")["0"][...]
    b = zarr.open_group(str(out), mode="r")["0"][...]
    np.testing.assert_array_equal(a, b)
    assert not done.exists()


# --- bad input ---------------------------------------------------------------------------------


def test_checkpoint_for_another_voxel_size(vol_mrc, tmp_path, capsys):
    bad = make_checkpoint(tmp_path / "b.pt", voxel=15.0)
    code, _, err = run_cli(["denoise", vol_mrc, bad, tmp_path / "o.zarr"], capsys)
    assert code == 1 and "trained on (15.0, 15.0, 15.0) Å voxels" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert not list(tmp_path.glob("*o.zarr*"))


def test_not_a_checkpoint_and_missing_checkpoint(vol_mrc, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["denoise", vol_mrc, junk, tmp_path / "o.zarr"], capsys)
    assert code == 1 and "junk.pt: corrupt or unreadable checkpoint" in err
    torch.save({"format_version": 1, "something": 1}, tmp_path / "other.pt")
    code, _, err = run_cli(["denoise", vol_mrc, tmp_path / "other.pt", tmp_path / "o.zarr"], capsys)
    assert code == 1 and "not a scnet-dask training checkpoint" in err
    code, _, err = run_cli(["denoise", vol_mrc, tmp_path / "nope.pt", tmp_path / "o.zarr"], capsys)
    assert code == 1 and "nope.pt: no such checkpoint" in err
    code, _, err = run_cli(["denoise", vol_mrc, tmp_path / "o.zarr"], capsys)
    assert code == 1 and "--method scnet needs a CHECKPOINT" in err


def test_chunks_not_a_multiple_of_16(vol_mrc, ckpt, tmp_path, capsys):
    code, _, err = run_cli(
        ["denoise", vol_mrc, ckpt, tmp_path / "o.zarr", "--chunks", "100"], capsys
    )
    assert code == 1 and "multiple of 16" in err and "got 100" in err
    code, _, err = run_cli(["denoise", vol_mrc, ckpt, tmp_path / "o.zarr", "--halo", "x"], capsys)
    assert code != 0 and "must be 'auto' or voxels" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_and_auto_fallback(vol_mrc, ckpt, tmp_path, capsys):
    code, _, err = run_cli(
        ["denoise", vol_mrc, ckpt, tmp_path / "o.zarr", "--device", "cuda"], capsys
    )
    assert code == 1 and "--device cuda: no CUDA device is available" in err
    assert not (tmp_path / "o.zarr").exists()
    code, _, err = run_cli(
        ["denoise", vol_mrc, tmp_path / "g.zarr", "--method", "gaussian", "--chunks", "32"], capsys
    )
    assert code == 0
    code, _, err = run_cli(
        ["denoise", vol_mrc, ckpt, tmp_path / "a.zarr", "--chunks", "32"], capsys
    )
    assert code == 0 and "no CUDA device found; running on the CPU" in err


def test_output_exists(vol_mrc, ckpt, tmp_path, capsys):
    out = tmp_path / "o.zarr"
    out.mkdir()
    code, _, err = run_cli(["denoise", vol_mrc, ckpt, out], capsys)
    assert code == 1 and "output exists; pass --overwrite" in err


def test_nan_in_input(tmp_path, ckpt, capsys):
    v = structured((32, 32, 32))
    v[20, 5, 7] = np.nan
    src = write_mrc(tmp_path / "nan.mrc", v)
    code, _, err = run_cli(["denoise", src, ckpt, tmp_path / "o.zarr", "--chunks", "16"], capsys)
    assert code == 1 and "nan.mrc: NaN/Inf voxels in the input (within (z, y, x) = " in err
    assert not any(p.name != "nan.mrc" and p.name != "best.pt" for p in tmp_path.iterdir())
    code, _, err = run_cli(["denoise", src, tmp_path / "o.mrc", "--method", "gaussian"], capsys)
    assert code == 1 and "NaN/Inf" in err
    assert not any(p.name.startswith((".o", "o.")) for p in tmp_path.iterdir())


def test_denoise_config_file(vol_mrc, ckpt, tmp_path, capsys):
    cfg = tmp_path / "d.yaml"
    cfg.write_text("chunks: 32\nwindow: cosine\nbatch_size: 2\ndevice: cpu\n")
    code, out, err = run_cli(
        ["denoise", "--config", cfg, vol_mrc, ckpt, tmp_path / "o.zarr"], capsys
    )
    assert code == 0, err
    prov = json.loads(json.dumps(zarr.open_group(str(tmp_path / "o.zarr")).attrs["scnet_dask"]))
    last = prov["provenance"][-1]
    assert last["window"] == "cosine" and last["chunks"] == 32 and last["batch_size"] == 2


def test_lowpass_response_is_half_at_the_cut_off(tmp_path, capsys):
    from scnet_dask.methods.lowpass import lowpass_sigma_voxels

    sigma = lowpass_sigma_voxels(40.0, (5.0, 5.0, 10.0))
    f = 1 / 40.0
    for s, v in zip(sigma, (5.0, 5.0, 10.0), strict=True):
        assert np.exp(-2 * np.pi**2 * (s * v) ** 2 * f**2) == pytest.approx(0.5)
    src = write_mrc(tmp_path / "v.mrc", structured((24, 40, 40)), voxel=10.0)
    out = tmp_path / "lp.zarr"
    code, _, err = run_cli(
        ["denoise", src, out, "--method", "lowpass", "--cutoff-angstrom", "60", "--chunks", "16"],
        capsys,
    )
    assert code == 0, err
    vol = np.asarray(mrcfile.read(src), dtype=np.float32)
    s = lowpass_sigma_voxels(60.0, (10.0, 10.0, 10.0))
    ref = gaussian_filter(da.from_array(vol), s, mode="reflect").compute()
    got = np.asarray(open_source(out).data)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    prov = zarr.open_group(str(out)).attrs["scnet_dask"]["provenance"][-1]
    assert prov["method"] == "lowpass" and prov["cutoff_angstrom"] == 60.0


def test_topaz_3d_baseline_runs_on_the_same_path(tmp_path, capsys):
    pytest.importorskip("topaz")
    src = write_mrc(tmp_path / "v.mrc", structured((32, 48, 48)), voxel=10.0)
    code, _, err = run_cli(
        ["denoise", src, tmp_path / "t.zarr", "--method", "topaz-3d", "--chunks", "32",
         "--device", "cpu"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    got = np.asarray(open_source(tmp_path / "t.zarr").data)
    vol = np.asarray(mrcfile.read(src), dtype=np.float32)
    assert got.shape == vol.shape and np.isfinite(got).all()
    assert got.std() < vol.std()  # it smooths
