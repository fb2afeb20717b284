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


def test_a_zarr_group_of_several_arrays_is_not_guessed(tmp_path, capsys):
    """B11: arrays ``labels`` and ``raw`` without multiscales: refused, naming both."""
    import zarr

    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("labels", data=np.zeros((4, 8, 8), np.uint8))
    g.create_array("raw", data=np.ones((4, 8, 8), np.float32))
    code, _, err = run_cli(["convert", tmp_path / "g.zarr", tmp_path / "o.zarr"], capsys)
    assert code == 1 and "labels, raw" in err and not (tmp_path / "o.zarr").exists()
    code, _, err = run_cli(["info", tmp_path / "g.zarr" / "raw", "--json"], capsys)
    assert code == 0, err


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ngff_multiscales_level_scale_is_applied(tmp_path, capsys, version):
    """B12 / B26: the multiscales-level scale multiplies the dataset's (80 Å, not 10 Å)."""
    import zarr

    fmt = 2 if version == "0.4" else 3
    g = zarr.open_group(str(tmp_path / "n.zarr"), mode="w", zarr_format=fmt)
    g.create_array("s0", data=np.random.default_rng(0).random((8, 16, 16), np.float32))
    g.create_array("s1", data=np.random.default_rng(0).random((4, 8, 8), np.float32))
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in "zyx"]
    ms = {
        "axes": axes,
        "datasets": [
            {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [10, 10, 10]}]},
            {"path": "s1", "coordinateTransformations": [{"type": "scale", "scale": [20, 20, 20]}]},
        ],
        "coordinateTransformations": [{"type": "scale", "scale": [8, 8, 8]}],
    }
    if version == "0.4":
        g.attrs["multiscales"] = [{**ms, "version": "0.4"}]
    else:
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    code, out, err = run_cli(["info", tmp_path / "n.zarr", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["voxel_size_angstrom"] == [80.0, 80.0, 80.0]
    assert "placeholder" not in err
    from scnet_dask.io.omezarr import pyramid_levels

    assert [a.shape for a in pyramid_levels(tmp_path / "n.zarr")] == [(8, 16, 16), (4, 8, 8)]


def test_training_on_a_bare_zarr_array_says_what_to_do(tmp_path, capsys):
    """B28: not "No group found in store"."""
    import zarr

    zarr.create_array(str(tmp_path / "a.zarr"), data=np.random.default_rng(0).random(
        (16, 32, 32), np.float32))  # fmt: skip
    code, _, err = run_cli(
        ["train", tmp_path / "a.zarr", "--method", "n2v", "--out", tmp_path / "r",
         "--patch-size", "16", "--device", "cpu"],
        capsys,
    )  # fmt: skip
    assert code == 1 and "bare Zarr array" in err and "scnet-dask convert" in err


def test_an_os_error_names_its_file_in_one_line():
    """B33: a read-only folder is one line naming the path, not a raw errno tuple."""
    from scnet_dask.cli.app import _one_line

    e = PermissionError(13, "Permission denied", "/data/out/results.csv")
    want = "/data/out/results.csv: permission denied; choose a folder you can write to"
    assert _one_line(e) == want


def test_a_tiff_of_pages_of_two_shapes_is_refused(tmp_path, capsys):
    """B6 / B21: not the first 6 of 12 pages converted, nor an internal error."""
    two = tmp_path / "two.tif"
    with tifffile.TiffWriter(two) as w:
        w.write(np.zeros((6, 8, 8), np.float32))
        w.write(np.zeros((6, 16, 16), np.float32))
    mid = tmp_path / "mid.tif"
    with tifffile.TiffWriter(mid) as w:
        for i in range(12):
            w.write(np.zeros((9, 9) if i == 5 else (8, 8), np.float32), contiguous=False)
    for path, what in ((two, "6 page(s) of (16, 16)"), (mid, "1 page(s) of (9, 9)")):
        for cmd in (["info", path], ["convert", path, tmp_path / "o.zarr"]):
            code, _, err = run_cli(cmd, capsys)
            assert code == 1 and what in err and "internal error" not in err, err
    assert not (tmp_path / "o.zarr").exists()


def test_a_slice_of_another_type_is_named(tmp_path, capsys):
    """B25: one uint16 slice among uint8 ones: the error names it (no 'cannot reshape')."""
    folder = tmp_path / "s"
    folder.mkdir()
    for i in range(4):
        dtype = np.uint16 if i == 2 else np.uint8
        tifffile.imwrite(folder / f"s{i}.tif", np.zeros((8, 8), dtype))
    code, _, err = run_cli(["convert", folder, tmp_path / "o.zarr"], capsys)
    assert code == 1 and "s2.tif" in err and "uint16" in err and "reshape" not in err


def test_ome_tiff_physical_size_is_read(tmp_path, capsys):
    """B27: PhysicalSize* in nm, not a 'placeholder'."""
    path = tmp_path / "v.ome.tif"
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 0.5, "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 1.0,
            "PhysicalSizeZUnit": "nm"}  # fmt: skip
    tifffile.imwrite(path, np.zeros((4, 8, 8), np.float32), ome=True, metadata=meta)
    code, out, err = run_cli(["info", path, "--json"], capsys)
    assert code == 0 and json.loads(out)["voxel_size_angstrom"] == [10.0, 5.0, 5.0]
    assert "placeholder" not in err


def test_an_input_changed_during_convert_gives_no_output(tmp_path, capsys, monkeypatch):
    """B16: the input is rewritten while convert reads it: refused, nothing left behind."""
    import scnet_dask.commands.convert as convert_mod

    src = write_mrc(tmp_path / "v.mrc", np.random.default_rng(2).random((8, 16, 16), np.float32))
    real = convert_mod.write_volume_zarr

    def rewrite_meanwhile(*a, **k):
        out = real(*a, **k)
        write_mrc(src, np.zeros((8, 16, 16), np.float32) + 5)  # another acquisition lands
        os.utime(src, (1, 1))
        return out

    monkeypatch.setattr(convert_mod, "write_volume_zarr", rewrite_meanwhile)
    code, _, err = run_cli(["convert", src, tmp_path / "o.zarr"], capsys)
    assert code == 1 and "changed while it was being read" in err
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / ".o.zarr.partial").exists()
