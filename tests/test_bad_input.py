from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.conftest import run_cli, sha256, write_mrc


def _no_partial(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if ".partial" in p.name]
    assert not leftovers, leftovers


def _fails(args, capsys, *needles: str) -> str:
    code, _, err = run_cli(args, capsys)
    assert code != 0
    lines = [
        ln for ln in err.strip().splitlines() if ln.startswith("scnet-dask: error") or "Error" in ln
    ]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_nonexistent_input(tmp_path, capsys):
    _fails(
        ["convert", tmp_path / "nope.mrc", tmp_path / "o.zarr"], capsys, "nope.mrc", "no such file"
    )
    assert not (tmp_path / "o.zarr").exists()


def test_truncated_mrc(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "t.mrc", small_volume)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) - 1000])
    before = sha256(src)
    _fails(["convert", src, tmp_path / "o.zarr"], capsys, "t.mrc", "truncated")
    assert sha256(src) == before
    _no_partial(tmp_path)
    assert not (tmp_path / "o.zarr").exists()


def test_unsupported_mode(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "m.mrc", small_volume)
    raw = bytearray(src.read_bytes())
    raw[12:16] = np.int32(9).tobytes()  # mode 9 does not exist
    src.write_bytes(bytes(raw))
    _fails(["convert", src, tmp_path / "o.zarr"], capsys, "m.mrc", "unsupported MRC mode 9")


def test_2d_image_mrc_and_tiff(tmp_path, capsys):
    src = write_mrc(tmp_path / "flat.mrc", np.zeros((1, 16, 16), np.float32))
    _fails(["convert", src, tmp_path / "o.zarr"], capsys, "flat.mrc", "3-D")
    tif = tmp_path / "flat.tif"
    tifffile.imwrite(tif, np.zeros((16, 16), np.uint8))
    _fails(["convert", tif, tmp_path / "o.zarr"], capsys, "flat.tif", "2-D")


def test_4d_file(tmp_path, capsys):
    tif = tmp_path / "four.tif"
    tifffile.imwrite(
        tif, np.zeros((2, 3, 16, 16), np.uint8), imagej=True, metadata={"axes": "TZYX"}
    )
    _fails(["convert", tif, tmp_path / "o.zarr"], capsys, "four.tif", "4-D")


def test_nan_voxels(tmp_path, small_volume, capsys):
    vol = small_volume.copy()
    vol[3, 4, 5] = np.nan
    vol[7, 1, 2] = np.inf
    src = write_mrc(tmp_path / "n.mrc", vol)
    _fails(["convert", src, tmp_path / "o.zarr"], capsys, "n.mrc", "2 NaN/Inf")
    _no_partial(tmp_path)
    assert not (tmp_path / "o.zarr").exists()
    code, _, err = run_cli(["convert", src, tmp_path / "z.zarr", "--nan-policy", "zero"], capsys)
    assert code == 0 and "replacing 2" in err
    import zarr

    arr = zarr.open_group(str(tmp_path / "z.zarr"))["0"][:]
    assert arr[3, 4, 5] == 0 and arr[7, 1, 2] == 0 and np.isfinite(arr).all()
    code, _, _ = run_cli(["convert", src, tmp_path / "m.zarr", "--nan-policy", "mean"], capsys)
    arr = zarr.open_group(str(tmp_path / "m.zarr"))["0"][:]
    finite = vol[np.isfinite(vol)].astype(np.float64).mean()
    assert arr[3, 4, 5] == pytest.approx(finite, abs=1e-6)


def test_output_exists_needs_overwrite(small_mrc, tmp_path, capsys):
    out = tmp_path / "o.zarr"
    assert run_cli(["convert", small_mrc, out], capsys)[0] == 0
    before = sha256(out)
    _fails(["convert", small_mrc, out], capsys, "o.zarr", "--overwrite")
    assert sha256(out) == before
    assert run_cli(["convert", small_mrc, out, "--overwrite", "--chunks", "16"], capsys)[0] == 0
    mrc_out = tmp_path / "e.mrc"
    mrc_out.write_bytes(b"keep")
    _fails(["export", out, mrc_out], capsys, "e.mrc", "--overwrite")
    assert mrc_out.read_bytes() == b"keep"


def test_unwritable_output_folder(small_mrc, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    _fails(["convert", small_mrc, blocker / "o.zarr"], capsys, "o.zarr", "not a folder")
    _fails(["convert", small_mrc, tmp_path / "missing" / "o.zarr"], capsys, "does not exist")


def test_disk_full_midway_keeps_the_work_for_resume(small_mrc, tmp_path, capsys, monkeypatch):
    from zarr.storage import LocalStore

    real_set = LocalStore.set
    calls = {"n": 0}

    async def full_set(self, key, value):
        calls["n"] += 1
        if calls["n"] > 6 and key.endswith(tuple("0123456789")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real_set(self, key, value)

    monkeypatch.setattr(LocalStore, "set", full_set)
    before = sha256(small_mrc)
    args = ["convert", small_mrc, tmp_path / "o.zarr", "--chunks", "8"]
    _fails(args, capsys, "No space left", "--resume")
    assert not (tmp_path / "o.zarr").exists()
    assert (tmp_path / ".o.zarr.partial").exists()  # the work so far is kept
    assert sha256(small_mrc) == before
    monkeypatch.setattr(LocalStore, "set", real_set)  # space was freed
    assert run_cli([*args, "--resume"], capsys)[0] == 0
    _no_partial(tmp_path)


def test_export_disk_full_leaves_nothing(small_mrc, tmp_path, capsys, monkeypatch):
    z = tmp_path / "a.zarr"
    assert run_cli(["convert", small_mrc, z], capsys)[0] == 0
    import scnet_dask.io.mrc as mrcmod

    real = np.ndarray.tobytes
    calls = {"n": 0}

    def slab_writer(block):  # the write of the second slab fails as on a full disk
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(block)

    monkeypatch.setattr(mrcmod, "_slab_bytes", slab_writer)
    out = tmp_path / "o.mrc"
    _fails(["export", z, out], capsys, "No space left")
    assert not out.exists()
    _no_partial(tmp_path)


def test_bad_option_values(small_mrc, tmp_path, capsys):
    _fails(["convert", small_mrc, tmp_path / "o.mrc"], capsys, "must end in .zarr")
    _fails(["convert", small_mrc, tmp_path / "o.zarr", "--chunks", "3"], capsys, "chunks")
    _fails(["convert", tmp_path / "x.xyz", tmp_path / "o.zarr"], capsys, "x.xyz")


# --- misuse cases found by trying the tool as a new user (issue 16, item 6), fixed here -------
def test_demo_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    _fails(["demo", "--out", mine], capsys, "not made by 'scnet-dask demo'")
    assert (mine / "chapter1.tex").read_text() == "precious"


def test_voxel_size_inf_is_refused(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "v.mrc", small_volume)
    _fails(["convert", src, tmp_path / "o.zarr", "--voxel-size", "inf"], capsys, "voxel_size")
    assert not (tmp_path / "o.zarr").exists()


def test_simulate_duplicate_noise_levels_refused(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "v.mrc", small_volume)
    _fails(["simulate", src, tmp_path / "sim", "--noise-sigma", "10,10.0"], capsys, "distinct")
    assert not (tmp_path / "sim").exists()


def test_prior_output_must_be_zarr_and_unused_options_refused(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "v.mrc", small_volume)
    assert run_cli(["convert", src, tmp_path / "v.zarr"], capsys)[0] == 0
    _fails(["prior", tmp_path / "v.zarr", tmp_path / "p.mrc"], capsys, "must end in .zarr")
    assert not (tmp_path / "p.mrc").exists()
    args = ["prior", tmp_path / "v.zarr", tmp_path / "p.zarr", "--method", "file",
            "--prior-file", src, "--sigma", "2"]  # fmt: skip
    _fails(args, capsys, "sigma: not used by --method file")


def test_checkpoint_with_a_baseline_is_refused(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "v.mrc", small_volume)
    ck = tmp_path / "c.pt"
    ck.write_bytes(b"x")
    _fails(["denoise", src, ck, tmp_path / "o.zarr", "--method", "gaussian"], capsys,
           "takes no checkpoint")  # fmt: skip
    assert not (tmp_path / "o.zarr").exists()


def test_unknown_ome_axis_unit_is_refused(tmp_path, small_volume, capsys):
    import zarr

    src = write_mrc(tmp_path / "v.mrc", small_volume)
    out = tmp_path / "v.zarr"
    assert run_cli(["convert", src, out], capsys)[0] == 0
    g = zarr.open_group(str(out), mode="r+")
    ome = dict(g.attrs["ome"])
    ome["multiscales"][0]["axes"][0]["unit"] = "parsec"
    g.attrs["ome"] = ome
    _fails(["info", out], capsys, "unknown OME axis unit 'parsec'")
    ome["multiscales"][0]["axes"][0]["unit"] = "nanometer"
    g.attrs["ome"] = ome
    code, stdout, _ = run_cli(["info", out, "--json"], capsys)
    import json

    assert code == 0 and json.loads(stdout)["voxel_size_angstrom"][0] == pytest.approx(75.0)


def test_no_command_writes_into_or_over_its_input(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "t.mrc", small_volume)
    vol = tmp_path / "in.zarr"
    assert run_cli(["convert", src, vol], capsys)[0] == 0
    before_src, before_vol = sha256(src), sha256(vol)
    _fails(["convert", vol, vol / "sub.zarr"], capsys, "is inside the input")
    _fails(["denoise", src, src, "--method", "gaussian", "--overwrite"], capsys,
           "output is the input")  # fmt: skip
    _fails(["export", vol, vol / "x.mrc"], capsys, "inside the input")
    _fails(["prior", vol, vol / "p.zarr"], capsys, "inside the input")
    _fails(["train", vol / "0", "--method", "n2v", "--out", tmp_path], capsys, "contains the input")
    assert sha256(src) == before_src and sha256(vol) == before_vol


def test_train_does_not_take_over_a_folder_of_other_files(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "t.mrc", small_volume)
    vol = tmp_path / "in.zarr"
    assert run_cli(["convert", src, vol], capsys)[0] == 0
    run = tmp_path / "results"
    run.mkdir()
    (run / "log.csv").write_text("my own log\n")
    _fails(["train", vol, "--method", "n2v", "--out", run, "--patch-size", "16"], capsys,
           "already holds log.csv")  # fmt: skip
    assert (run / "log.csv").read_text() == "my own log\n"


def test_config_file_errors_name_the_file_line_and_key(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "v.mrc", small_volume)
    bad = tmp_path / "bad.yaml"
    bad.write_text("chunks: 16\nvoxel-size: [1, 2\n")
    line = _fails(["convert", "--config", bad, src, tmp_path / "o.zarr"], capsys, "bad.yaml",
                  "invalid YAML at line")  # fmt: skip
    assert "column" in line
    typed = tmp_path / "typed.yaml"
    typed.write_text("chunks: many\n")
    code, _, err = run_cli(["convert", "--config", typed, src, tmp_path / "o.zarr"], capsys)
    assert code != 0 and "typed.yaml: key 'chunks'" in err
    assert not (tmp_path / "o.zarr").exists()


def test_rgb_tiff_text_as_mrc_and_odd_slices_are_named(tmp_path, capsys):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    _fails(["convert", rgb, tmp_path / "o.zarr"], capsys, "rgb.tif", "colour (RGB) TIFF")
    _fails(["info", rgb], capsys, "colour (RGB) TIFF")
    txt = tmp_path / "notes.mrc"
    txt.write_text("This is a long text file, not a map. " * 100)
    _fails(["info", txt], capsys, "notes.mrc", "not an MRC file")
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"s{i}.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(folder / "s3.tif", np.zeros((16, 20), np.uint8))
    _fails(["convert", folder, tmp_path / "f.zarr"], capsys, "s3.tif", "(16, 20)")
    (folder / "s3.tif").write_text("not a tiff")
    _fails(["convert", folder, tmp_path / "f.zarr"], capsys, "s3.tif", "not a readable TIFF")
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / "f.zarr").exists()


def test_complex_zarr_and_nan_simulate_are_refused(tmp_path, small_volume, capsys):
    import zarr

    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=(8, 8, 8), dtype="complex64")
    z[...] = 1 + 2j
    _fails(["convert", tmp_path / "c.zarr", tmp_path / "o.zarr"], capsys, "c.zarr",
           "not a real-valued volume")  # fmt: skip
    assert not (tmp_path / "o.zarr").exists()
    vol = small_volume.copy()
    vol[3, 4, 5] = np.nan
    src = write_mrc(tmp_path / "nan.mrc", vol)
    _fails(["simulate", src, tmp_path / "sim"], capsys, "nan.mrc", "NaN/Inf", "1 voxels")
    assert not (tmp_path / "sim").exists()
