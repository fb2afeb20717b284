from __future__ import annotations

import json

import numpy as np
import pytest

from scnet_dask.commands.simulate import parse_tilts
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from tests.conftest import run_cli, write_mrc


def _phantom():
    vol = np.zeros((32, 48, 40), np.float32)
    zz, yy, xx = np.mgrid[0:32, 0:48, 0:40]
    vol[(zz - 16) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 < 60] = 1.0
    vol[(zz - 10) ** 2 + (yy - 36) ** 2 + (xx - 12) ** 2 < 20] = 2.0
    return vol


def test_simulate_writes_the_papers_procedure(tmp_path, capsys):
    src = write_mrc(tmp_path / "phantom.mrc", _phantom(), voxel=8.0)
    out = tmp_path / "sim"
    code, stdout, err = run_cli(
        ["simulate", src, out, "--noise-sigma", "0,20", "--tilts", "-60:60:3", "--seed", "4"],
        capsys,
    )
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["tilt_angles_deg"]) == 41 and m["noise_sigmas"] == [0.0, 20.0]
    roles = sorted((f["role"], f.get("noise_sigma")) for f in m["files"])
    assert ("reference", None) in roles and ("reconstruction_even", 20.0) in roles
    gt = np.asarray(open_source(out / "ground_truth.ome.zarr").data)
    assert open_source(out / "ground_truth.ome.zarr").voxel_size_angstrom == (8.0, 8.0, 8.0)
    clean = np.asarray(open_source(out / "rec_all_sigma0.ome.zarr").data)
    noisy = np.asarray(open_source(out / "rec_all_sigma20.ome.zarr").data)
    c_clean = np.corrcoef(clean.ravel(), gt.ravel())[0, 1]
    c_noisy = np.corrcoef(noisy.ravel(), gt.ravel())[0, 1]
    assert c_clean > 0.8 and c_noisy < c_clean  # noise went into the projections
    ts = np.asarray(open_source(out / "tilt_sigma0.ome.zarr").data)
    assert (
        ts.shape == (41, 48, 40) and ts.min() == pytest.approx(0) and ts.max() == pytest.approx(255)
    )
    e = np.asarray(open_source(out / "rec_even_sigma20.ome.zarr").data)
    o = np.asarray(open_source(out / "rec_odd_sigma20.ome.zarr").data)
    assert not np.allclose(e, o)  # independent noise in the two halves
    # reproducible from the seed
    code, _, _ = run_cli(["simulate", src, tmp_path / "sim2", "--noise-sigma", "20",
                          "--tilts", "-60:60:3", "--seed", "4"], capsys)  # fmt: skip
    again = np.asarray(open_source(tmp_path / "sim2" / "rec_all_sigma20.ome.zarr").data)
    np.testing.assert_array_equal(again, noisy)


def test_simulate_bad_input(tmp_path, capsys):
    with pytest.raises(InputError, match="START:STOP:STEP"):
        parse_tilts("-60,60")
    with pytest.raises(InputError, match="STEP > 0"):
        parse_tilts("60:-60:2")
    src = write_mrc(tmp_path / "p.mrc", _phantom())
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = run_cli(["simulate", src, tmp_path / "full"], capsys)
    assert code == 1 and "not empty; pass --overwrite" in err
