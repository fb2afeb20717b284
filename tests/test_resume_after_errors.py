"""Resume after any failure, not only after a kill: partial work is kept and --resume finishes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from scnet_dask.io import open_source
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import make_checkpoint, structured


def test_convert_resumes_after_an_io_error(tmp_path, capsys, monkeypatch):
    import dask.array as da

    src = write_mrc(tmp_path / "v.mrc", structured((40, 32, 32)), voxel=10.0)
    ref = tmp_path / "ref.zarr"
    assert run_cli(["convert", src, ref, "--chunks", "8"], capsys)[0] == 0
    real, calls = da.store, {"n": 0}

    def nfs_hiccup(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(5, "Input/output error")
        return real(*a, **k)

    monkeypatch.setattr(da, "store", nfs_hiccup)
    out = tmp_path / "out.zarr"
    code, _, err = run_cli(["convert", src, out, "--chunks", "8"], capsys)
    assert code == 1 and "stopped by OSError" in err and "--resume" in err
    assert (tmp_path / ".out.zarr.partial").exists() and not out.exists()
    monkeypatch.setattr(da, "store", real)
    assert run_cli(["convert", src, out, "--chunks", "8", "--resume"], capsys)[0] == 0
    got, want = zarr.open_group(str(out))["0"][:], zarr.open_group(str(ref))["0"][:]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("suffix", [".zarr", pytest.param(".mrc", marks=pytest.mark.slow)])
def test_denoise_resumes_after_a_predictor_error(suffix, tmp_path, capsys, monkeypatch):
    vol = write_mrc(tmp_path / "v.mrc", structured((16, 96, 96)), voxel=7.5)
    ck = make_checkpoint(tmp_path / "c.pt")
    args = ["--chunks", "16", "--device", "cpu"]
    ref = tmp_path / f"ref{suffix}"
    assert run_cli(["denoise", vol, ck, ref, *args, "--tile", "16"], capsys)[0] == 0
    import scnet_dask.methods._unet as unet

    real, calls = unet.forward_normalised, {"n": 0}

    def oom_late(*a, **k):
        calls["n"] += 1
        if calls["n"] == 30:  # of 36 tiles: some chunks are finished by then
            raise RuntimeError("CUDA out of memory (injected)")
        return real(*a, **k)

    monkeypatch.setattr(unet, "forward_normalised", oom_late)
    out = tmp_path / f"out{suffix}"
    code, _, err = run_cli(["denoise", vol, ck, out, *args, "--tile", "16"], capsys)
    assert code == 1 and "stopped by RuntimeError" in err and "--resume" in err
    assert not out.exists()
    monkeypatch.setattr(unet, "forward_normalised", real)
    # --tile auto would choose larger tiles here; --resume keeps the interrupted run's tiling
    code, stdout, err = run_cli(["denoise", vol, ck, out, *args, "--resume"], capsys)
    assert code == 0, err
    assert " 0 resumed" not in stdout and "tile (16, 16, 16)" in stdout
    a, b = np.asarray(open_source(ref).data), np.asarray(open_source(out).data)
    np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob(".out*"))  # markers, work store and scratch cleaned up


def test_train_resumes_after_an_error(tmp_path, capsys, monkeypatch):
    src = write_mrc(tmp_path / "v.mrc", structured((32, 48, 48)), voxel=10.0)
    vol = tmp_path / "v.zarr"
    assert run_cli(["convert", src, vol, "--chunks", "16"], capsys)[0] == 0
    args = ["train", vol, "--method", "n2v", "--patch-size", "16", "--features", "4",
            "--epochs", "3", "--steps-per-epoch", "4", "--val-patches", "1", "--device", "cpu",
            "--no-plots"]  # fmt: skip
    assert run_cli([*args, "--out", tmp_path / "ref"], capsys)[0] == 0
    import scnet_dask.methods.n2v as n2v

    real, calls = n2v.n2v_losses, {"n": 0}

    def broken_at_ninth(*a, **k):
        calls["n"] += 1
        if calls["n"] == 9:
            raise OSError(116, "Stale file handle")
        return real(*a, **k)

    monkeypatch.setattr(n2v, "n2v_losses", broken_at_ninth)
    code, _, err = run_cli([*args, "--out", tmp_path / "run"], capsys)
    assert code == 1 and "Stale file handle" in err
    monkeypatch.setattr(n2v, "n2v_losses", real)
    assert run_cli([*args, "--out", tmp_path / "run", "--resume"], capsys)[0] == 0
    import torch

    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)["networks"]["model"]
    b = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["networks"]["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_reconverted_zarr_input(tmp_path, capsys):
    import scnet_dask.distributed.compute as den_mod

    src = write_mrc(tmp_path / "v.mrc", structured((16, 48, 48)), voxel=10.0)
    vol = tmp_path / "v.zarr"
    assert run_cli(["convert", src, vol, "--chunks", "16"], capsys)[0] == 0
    real, calls = den_mod._store_block, {"n": 0}

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(5, "Input/output error (injected)")
        return real(*a, **k)

    den_mod._store_block = failing
    try:
        args = ["denoise", vol, tmp_path / "o.zarr", "--method", "gaussian", "--chunks", "16"]
        code, _, err = run_cli(args, capsys)
        assert code == 1 and "--resume" in err, err
    finally:
        den_mod._store_block = real
    assert (tmp_path / ".o.zarr.partial").exists()
    # the same path, another volume: the partial chunks must not be mixed in
    src2 = write_mrc(tmp_path / "w.mrc", structured((16, 48, 48), seed=9), voxel=10.0)
    assert run_cli(["convert", src2, vol, "--chunks", "16", "--overwrite"], capsys)[0] == 0
    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert " 0 resumed" in out  # started over


def test_ctrl_c_during_denoise_aborts_cleanly_and_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from tests.test_denoise import _cmd

    vol = write_mrc(tmp_path / "v.mrc", structured((32, 64, 64), seed=2))
    ck = make_checkpoint(tmp_path / "c.pt", features=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["denoise", vol, ck, tmp_path / "out.zarr", "--chunks", "16", "--device", "cpu"]
    proc = subprocess.Popen(_cmd(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    done = tmp_path / ".out.zarr.partial.done"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(done.glob("*"))) < 4 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.startswith("scnet-dask:")]
    assert lines[-1] == "scnet-dask: aborted" and "Directory not empty" not in err
    r = subprocess.run(_cmd([*args, "--resume"]), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / ".out.zarr.scratch").exists()
    # the resumed output is the uninterrupted run's, voxel for voxel
    whole = [*args[:3], tmp_path / "whole.zarr", *args[4:]]
    r = subprocess.run(_cmd(whole), env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = zarr.open_group(str(tmp_path / "out.zarr"))["0"][...]
    ref = zarr.open_group(str(tmp_path / "whole.zarr"))["0"][...]
    assert got.shape == ref.shape and np.array_equal(got, ref)


def test_an_unwritable_output_midway_reports_the_real_error(tmp_path, capsys, monkeypatch):
    import scnet_dask.distributed.compute as den_mod

    vol = write_mrc(tmp_path / "v.mrc", structured((16, 48, 48)), voxel=7.5)
    real, calls = den_mod._store_block, {"n": 0}

    def read_only(*a, **k):  # the output folder became read-only (root ignores chmod)
        calls["n"] += 1
        if calls["n"] == 4:
            raise PermissionError(1, "Operation not permitted", str(tmp_path / "o.zarr"))
        return real(*a, **k)

    monkeypatch.setattr(den_mod, "_store_block", read_only)
    code, _, err = run_cli(
        ["denoise", vol, tmp_path / "o.zarr", "--method", "gaussian", "--chunks", "16"], capsys
    )
    assert code == 1
    line = [ln for ln in err.splitlines() if "error" in ln][-1]
    assert "PermissionError" in line and "Operation not permitted" in line and "--resume" in line


@pytest.mark.slow  # 15 s
def test_denoise_resumes_with_another_tile(tmp_path, capsys, monkeypatch):
    """A smaller --tile after a stopped run (e.g. out of GPU memory) continues it: exact tilings
    agree to float rounding, so the finished chunks are kept."""
    vol = write_mrc(tmp_path / "v.mrc", structured((16, 96, 96)), voxel=7.5)
    ck = make_checkpoint(tmp_path / "c.pt")
    args = ["--chunks", "16", "--device", "cpu"]
    import time

    import scnet_dask.distributed.compute as dn

    real = dn._store_block

    def fails_last(block, arr, region, marker, cleanup):
        if region[1].start == 80 and region[2].start == 80:
            time.sleep(2.0)  # meanwhile the other thread stores other chunks
            raise RuntimeError("CUDA out of memory (injected)")
        return real(block, arr, region, marker, cleanup)

    monkeypatch.setattr(dn, "_store_block", fails_last)
    out = tmp_path / "out.zarr"
    code, _, err = run_cli(["denoise", vol, ck, out, *args, "--tile", "32"], capsys)
    assert code == 1 and "stopped by RuntimeError" in err
    done = len(list((tmp_path / ".out.zarr.partial.done").glob("*")))
    assert 0 < done < 36
    monkeypatch.setattr(dn, "_store_block", real)
    code, stdout, err = run_cli(
        ["denoise", vol, ck, out, *args, "--tile", "16", "--resume"], capsys
    )
    assert code == 0, err
    assert f"{36 - done} chunks computed, {done} resumed" in stdout  # not started over
    assert "tile (16, 16, 16)" in stdout
    ref = tmp_path / "ref.zarr"
    assert run_cli(["denoise", vol, ck, ref, *args, "--tile", "16"], capsys)[0] == 0
    a, b = np.asarray(open_source(ref).data), np.asarray(open_source(out).data)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(a).max()))
