"""One validation where a volume is opened: header metadata that would make results wrong."""

from __future__ import annotations

import json
import os

import mrcfile
import numpy as np
import pytest
import tifffile

from scnet_dask.io import open_source
from tests.conftest import run_cli, write_mrc


def test_slice_folder_is_read_in_natural_order(tmp_path, capsys):
    """B4: slice1 … slice12 must stack as 1, 2, …, 12, not 1, 10, 11, 12, 2, …"""
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(1, 13):
        tifffile.imwrite(folder / f"slice{i}.tif", np.full((8, 8), i, np.float32))
    vol = np.asarray(open_source(folder).data)
    assert [int(vol[k, 0, 0]) for k in range(12)] == list(range(1, 13))
    code, _, err = run_cli(["convert", folder, tmp_path / "s.zarr", "--voxel-size", "40"], capsys)
    assert code == 0, err
    got = np.asarray(open_source(tmp_path / "s.zarr").data)
    assert [int(got[k, 0, 0]) for k in range(12)] == list(range(1, 13))


def test_complex_mrc_is_refused(tmp_path, capsys):
    """B7: mode 4 (complex64) would lose its imaginary part."""
    path = tmp_path / "c.mrc"
    with mrcfile.new(path) as m:
        m.set_data((np.ones((4, 8, 8)) + 1j * np.ones((4, 8, 8))).astype(np.complex64))
    code, _, err = run_cli(["convert", path, tmp_path / "c.zarr"], capsys)
    assert code == 1 and "complex" in err and str(path) in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c.zarr").exists()


def test_complex_tiff_is_refused(tmp_path, capsys):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, (np.ones((4, 8, 8)) + 2j).astype(np.complex64))
    code, _, err = run_cli(["info", path], capsys)
    assert code == 1 and "complex" in err and str(path) in err


def test_non_standard_mrc_axis_order_is_refused(tmp_path, capsys):
    """B10: mapc/mapr/maps = 3,2,1 is not silently read (and rewritten) as 1,2,3."""
    path = write_mrc(tmp_path / "a.mrc", np.zeros((4, 6, 8), np.float32))
    with mrcfile.open(path, mode="r+") as m:
        m.header.mapc, m.header.mapr, m.header.maps = 3, 2, 1
    code, _, err = run_cli(["convert", path, tmp_path / "a.zarr"], capsys)
    assert code == 1 and "mapc/mapr/maps = 3,2,1" in err and not (tmp_path / "a.zarr").exists()


def test_nan_voxel_size_is_never_written_on(tmp_path, capsys):
    """B13: a NaN voxel size is treated as unknown, not written into zarr.json or info."""
    path = write_mrc(tmp_path / "n.mrc", np.random.default_rng(0).random((4, 8, 8), np.float32))
    with mrcfile.open(path, mode="r+") as m:
        m.header.cella.x = np.nan
    code, out, err = run_cli(["info", path, "--json"], capsys)
    assert code == 0 and "NaN" not in out and "Infinity" not in out
    voxel = json.loads(out)["voxel_size_angstrom"]
    assert all(np.isfinite(v) for v in voxel) and "not a finite" in err
    code, _, err = run_cli(["convert", path, tmp_path / "n.zarr"], capsys)
    assert code == 0, err
    text = (tmp_path / "n.zarr" / "zarr.json").read_text()
    assert "NaN" not in text and "placeholder" in err


def test_mrc_start_indices_survive_convert_and_export(tmp_path, capsys):
    """B17: nxstart/nystart/nzstart are kept, like the origin."""
    path = write_mrc(tmp_path / "s.mrc", np.random.default_rng(1).random((4, 8, 8), np.float32))
    with mrcfile.open(path, mode="r+") as m:
        m.header.nxstart, m.header.nystart, m.header.nzstart = -4, 7, 2
    assert run_cli(["convert", path, tmp_path / "s.zarr"], capsys)[0] == 0
    assert run_cli(["export", tmp_path / "s.zarr", tmp_path / "back.mrc"], capsys)[0] == 0
    with mrcfile.open(tmp_path / "back.mrc", header_only=True) as m:
        got = (int(m.header.nxstart), int(m.header.nystart), int(m.header.nzstart))
    assert got == (-4, 7, 2)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_named_as_such(tmp_path, capsys):
    """B34: a pipe named x.mrc is not 'no such file'."""
    fifo = tmp_path / "x.mrc"
    os.mkfifo(fifo)
    code, _, err = run_cli(["info", fifo], capsys)
    assert code == 1 and "not a regular file" in err and "no such file" not in err
