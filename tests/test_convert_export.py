from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import mrcfile
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

from scnet_dask.io import open_source, open_volume
from scnet_dask.io.omezarr import ATTRS_KEY
from tests.conftest import run_cli, sha256, shared, write_mrc


def test_open_volume_is_lazy_dataarray_in_angstrom(small_mrc: Path) -> None:
    arr = open_volume(small_mrc)
    assert isinstance(arr, xr.DataArray)
    assert arr.dims == ("z", "y", "x")
    assert hasattr(arr.data, "dask")
    assert arr.attrs["voxel_size_angstrom"] == pytest.approx((7.5, 7.5, 7.5))
    assert float(arr.x[3]) == pytest.approx(3 * 7.5)
    np.testing.assert_array_equal(
        arr[2:5, 3:9, 1:40:3].values, mrcfile.read(small_mrc)[2:5, 3:9, 1:40:3]
    )


def test_convert_writes_valid_ome_zarr_with_stats(small_mrc, small_volume, tmp_path, capsys):
    out = tmp_path / "out.ome.zarr"
    code, stdout, err = run_cli(["convert", small_mrc, out, "--chunks", "16"], capsys)
    assert code == 0, err
    assert "wrote" in stdout
    g = zarr.open_group(str(out), mode="r")
    assert g["0"].chunks == (16, 16, 16)
    assert g["0"].dtype == np.float32
    np.testing.assert_array_equal(g["0"][:], small_volume)
    assert g["1"].shape == (10, 16, 20) and g["2"].shape == (5, 8, 10)
    np.testing.assert_allclose(g["1"][0, 0, 0], small_volume[:2, :2, :2].mean(), rtol=1e-5)
    attrs = dict(g.attrs)
    ms = attrs["ome"]["multiscales"][0]
    assert [a["unit"] for a in ms["axes"]] == ["angstrom"] * 3
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [7.5, 7.5, 7.5]
    st = attrs[ATTRS_KEY]["statistics"]
    assert st["mean"] == pytest.approx(float(small_volume.astype(np.float64).mean()), rel=1e-6)
    assert st["std"] == pytest.approx(float(small_volume.astype(np.float64).std()), rel=1e-6)
    assert st["min"] == pytest.approx(float(small_volume.min()))
    assert st["p99.9"] == pytest.approx(float(np.percentile(small_volume, 99.9)), rel=1e-5)
    assert attrs[ATTRS_KEY]["source"]["labels"][-1] == "test label one"
    assert attrs[ATTRS_KEY]["provenance"][0]["step"] == "convert"
    assert not (tmp_path / ".out.ome.zarr.partial").exists()


def test_output_validates_with_ome_zarr_models_and_reader(small_mrc, tmp_path, capsys):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05.image import Image

    out = tmp_path / "v.ome.zarr"
    assert run_cli(["convert", small_mrc, out, "--chunks", "16"], capsys)[0] == 0
    img = Image.from_zarr(zarr.open_group(str(out), mode="r"))
    assert len(img.attributes.ome.multiscales[0].datasets) == 3
    nodes = list(Reader(parse_url(str(out)))())
    assert [tuple(d.shape) for d in nodes[0].data] == [(20, 33, 41), (10, 16, 20), (5, 8, 10)]


@pytest.mark.parametrize("rel", ["real/tardis_mrc3D.mrc", "temsim/rec_even.mrc"])
def test_mrc_roundtrip_exact_with_header(rel, tmp_path, capsys):
    src = shared(rel)
    before = sha256(src)
    z = tmp_path / "a.zarr"
    assert run_cli(["convert", src, z], capsys)[0] == 0
    out = tmp_path / "back.mrc"
    assert run_cli(["export", z, out, "--dtype", "source"], capsys)[0] == 0
    with mrcfile.open(src, permissive=True) as a, mrcfile.open(out) as b:
        np.testing.assert_array_equal(a.data, b.data)
        assert a.data.dtype == b.data.dtype
        assert tuple(a.voxel_size.item()) == pytest.approx(tuple(b.voxel_size.item()))
        la = [bytes(x).decode("latin-1").rstrip() for x in a.header.label[: a.header.nlabl]]
        lb = [bytes(x).decode("latin-1").rstrip() for x in b.header.label[: b.header.nlabl]]
        assert lb[: min(len(la), 9)] == la[:9]
        assert b.header.dmax == pytest.approx(float(a.data.max()))
    # float32 export is value-exact too
    out32 = tmp_path / "back32.mrc"
    assert run_cli(["export", z, out32], capsys)[0] == 0
    np.testing.assert_array_equal(mrcfile.read(out32), mrcfile.read(src).astype(np.float32))
    assert sha256(src) == before


def test_tiff_roundtrip_real_microtubule(tmp_path, capsys):
    src = shared("real/13pf_MT.tif")
    z = tmp_path / "mt.zarr"
    assert run_cli(["convert", src, z, "--dtype", "source"], capsys)[0] == 0
    vol = open_source(z)
    assert vol.voxel_size_angstrom == pytest.approx((10.52, 10.52, 10.52), rel=1e-4)
    for out in (tmp_path / "mt.tif", tmp_path / "mt.mrc"):
        assert run_cli(["export", z, out, "--dtype", "float32"], capsys)[0] == 0
        back = open_source(out)
        np.testing.assert_array_equal(back.data.compute(), tifffile.imread(src).astype(np.float32))
        assert back.voxel_size_angstrom == pytest.approx((10.52, 10.52, 10.52), rel=1e-4)


def test_folder_of_tiff_slices_and_swap_yz(small_volume, tmp_path, capsys):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, sl in enumerate(small_volume):
        tifffile.imwrite(folder / f"s{i:03d}.tif", sl)
    out = tmp_path / "f.zarr"
    code, _, err = run_cli(["convert", folder, out, "--voxel-size", "4", "--swap-yz"], capsys)
    assert code == 0, err
    vol = open_source(out)
    np.testing.assert_array_equal(vol.data.compute(), small_volume.transpose(1, 0, 2))
    assert vol.voxel_size_angstrom == (4.0, 4.0, 4.0)


def test_placeholder_voxel_size_warns(tmp_path, small_volume, capsys):
    src = write_mrc(tmp_path / "p.mrc", small_volume, voxel=1.0)
    code, _, err = run_cli(["convert", src, tmp_path / "p.zarr"], capsys)
    assert code == 0
    assert "placeholder" in err


def test_info_json_for_mrc_tiff_zarr(small_mrc, tmp_path, capsys):
    z = tmp_path / "i.zarr"
    assert run_cli(["convert", small_mrc, z, "--chunks", "16"], capsys)[0] == 0
    tif = tmp_path / "i.tif"
    assert run_cli(["export", z, tif], capsys)[0] == 0
    for p in (small_mrc, tif, z):
        code, out, err = run_cli(["info", p, "--json"], capsys)
        assert code == 0, err
        d = json.loads(out)
        assert d["shape"] == [20, 33, 41]
        assert d["voxel_size_angstrom"] == pytest.approx([7.5, 7.5, 7.5])
        assert "dtype" in d and "chunks" in d
    code, out, _ = run_cli(["info", z], capsys)
    assert "pyramid levels:    3" in out and "statistics" in out


def test_config_yaml_mirrors_options_and_rejects_unknown(small_mrc, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("chunks: 16\nvoxel-size: 3.0\n")
    out = tmp_path / "y.zarr"
    assert run_cli(["convert", "--config", cfg, small_mrc, out], capsys)[0] == 0
    g = zarr.open_group(str(out), mode="r")
    assert g["0"].chunks == (16, 16, 16)
    assert open_source(out).voxel_size_angstrom == (3.0, 3.0, 3.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("chunkz: 16\n")
    code, _, err = run_cli(["convert", "--config", bad, small_mrc, tmp_path / "z.zarr"], capsys)
    assert code != 0 and "chunkz" in err
    assert not (tmp_path / "z.zarr").exists()


def test_version_and_help_on_every_command(capsys):
    exe = [sys.executable, "-m", "scnet_dask.cli"]
    r = subprocess.run([*exe, "--version"], capture_output=True, text=True)  # the entry point
    assert r.returncode == 0 and "scnet-dask" in r.stdout
    for cmd in ("convert", "export", "info", "demo"):  # in process: a Python start each is slow
        code, out, err = run_cli([cmd, "--help"], capsys)
        assert code == 0 and "Usage" in out, (cmd, err)


def test_resume_after_interruption_matches_uninterrupted(small_mrc, tmp_path, capsys, monkeypatch):
    import dask.array as da

    ref = tmp_path / "ref.zarr"
    assert run_cli(["convert", small_mrc, ref, "--chunks", "8"], capsys)[0] == 0
    out = tmp_path / "r.zarr"
    real_store = da.store
    import scnet_dask.io.store as convert_mod

    real_mark, calls = convert_mod.mark_done, {"n": 0}

    def killed_after_slab_1(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # slab 1 is written, its marker not: a kill at the worst moment
            raise KeyboardInterrupt
        return real_mark(*a, **k)

    monkeypatch.setattr(convert_mod, "mark_done", killed_after_slab_1)
    from scnet_dask.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(["convert", str(small_mrc), str(out), "--chunks", "8"])
    assert exc.value.code == 130
    monkeypatch.setattr(convert_mod, "mark_done", real_mark)
    partial = tmp_path / ".r.zarr.partial"
    assert partial.exists() and not out.exists()
    written = {}
    monkeypatch.setattr(
        da,
        "store",
        lambda *a, **k: (
            written.setdefault((a[1].basename, str(k.get("regions"))), 1),
            real_store(*a, **k),
        )[1],
    )
    assert run_cli(["convert", small_mrc, out, "--chunks", "8", "--resume"], capsys)[0] == 0
    level0_writes = [r for name, r in written if name == "0"]
    assert len(level0_writes) == 2, written  # only slabs 1 and 2 of 3 rewritten
    got, want = zarr.open_group(str(out)), zarr.open_group(str(ref))
    for level in ("0", "1", "2"):  # the resumed run's second pass gives the same pyramid
        np.testing.assert_allclose(got[level][:], want[level][:], rtol=1e-6, err_msg=level)
    s_got, s_want = got.attrs[ATTRS_KEY]["statistics"], want.attrs[ATTRS_KEY]["statistics"]
    assert s_got == pytest.approx(s_want, rel=1e-9)
    assert not partial.exists()


def test_demo_runs_end_to_end(tmp_path, capsys):
    code, out, err = run_cli(["demo", "--out", tmp_path / "demo"], capsys)
    assert code == 0, err
    assert "value-exact: True" in out and "loss total" in out
    assert (tmp_path / "demo" / "run" / "best.pt").exists()
    assert "denoise (tiled" in out and "SC-Net" in out and "PSNR" in out
    assert (tmp_path / "demo" / "slices.png").stat().st_size > 10_000
    # the demo's output follows the truth better than its noisy input (by ~0.09 in r); how it
    # ranks against the Gaussian (a 0.014 margin) is a measurement (docs/commands.md, "demo")
    r = {
        line.split("r =")[0].strip(): float(line.split("r =")[1].split()[0])
        for line in out.splitlines()
        if " r = " in line
    }
    assert set(r) == {"noisy", "gaussian σ1", "SC-Net"} and r["SC-Net"] > r["noisy"], r
    den = open_source(tmp_path / "demo" / "denoised.ome.zarr")
    assert den.data.shape == (48, 128, 128) and den.voxel_size_angstrom == (10.0, 10.0, 10.0)
    assert den.attrs["provenance"][-1]["step"] == "denoise"


def _whole_array_pass(level0: np.ndarray, chunks: int, tmp: Path) -> tuple[dict, dict]:
    """The pyramid and statistics of ``level0`` by one whole-array dask pass (the reference)."""
    from scnet_dask.io.omezarr import write_pyramid
    from scnet_dask.science.stats import finalise_statistics, lazy_statistics

    group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    arr = group.create_array("0", data=level0, chunks=(chunks,) * 3)
    extra = lazy_statistics(da.from_zarr(arr))
    stats = finalise_statistics(write_pyramid(group, 3, (chunks,) * 3, extra=extra))
    return {k: group[k][...] for k in sorted(group.array_keys())}, stats


def _assert_same(levels: dict, stats: dict, want_levels: dict, want_stats: dict) -> None:
    assert sorted(levels) == sorted(want_levels)
    for k, arr in levels.items():
        np.testing.assert_allclose(arr, want_levels[k], rtol=1e-6, atol=1e-6, err_msg=k)
    for key, value in want_stats.items():
        assert stats[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize(("shape", "chunks"), [((45, 40, 36), 8), ((33, 20, 18), 16)])
def test_one_pass_pyramid_and_statistics_equal_a_second_pass(shape, chunks, tmp_path, capsys):
    """convert writes the pyramid and statistics with level 0 (one read of the source), and
    finalise_store (denoise's) rebuilds them slab by slab from level 0: both equal one
    whole-array pass over level 0 (odd and one-section last slabs too)."""
    from scnet_dask.io.store import finalise_store

    rng = np.random.default_rng(3)
    vol = rng.standard_normal(shape).astype(np.float32)
    vol[0, 0, 0] = np.nan
    src = write_mrc(tmp_path / "v.mrc", vol, voxel=5.0)
    out = tmp_path / "v.zarr"
    args = ["convert", src, out, "--chunks", str(chunks), "--nan-policy", "zero"]
    assert run_cli(args, capsys)[0] == 0
    group = zarr.open_group(str(out), mode="r")
    levels = {k: group[k][...] for k in sorted(group.array_keys())}
    stats = dict(group.attrs[ATTRS_KEY]["statistics"])
    assert len(levels) == 3 and levels["1"].shape == tuple(s // 2 for s in shape)
    want_levels, want_stats = _whole_array_pass(levels["0"], chunks, tmp_path / "ref.zarr")
    _assert_same(levels, stats, want_levels, want_stats)
    again = zarr.open_group(str(tmp_path / "again.zarr"), mode="w", zarr_format=3)
    again.create_array("0", data=levels["0"], chunks=(chunks,) * 3)
    slabbed = finalise_store(again, (5.0,) * 3, {}, 3)
    _assert_same({k: again[k][...] for k in again.array_keys()}, slabbed, want_levels, want_stats)
