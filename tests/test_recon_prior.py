from __future__ import annotations

import dask.array as da
import mrcfile
import numpy as np
import pytest
import zarr

from scnet_dask.commands.convert import convert
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import ConvertConfig, PriorConfig
from scnet_dask.errors import InputError
from scnet_dask.science.recon import read_tilt_angles, wbp, wbp_slab
from tests.conftest import shared, write_mrc


def test_wbp_of_temsim_clean_tilts_matches_reference():
    ts = mrcfile.read(shared("temsim/tilt_clean.mrc"))
    ref = mrcfile.read(shared("temsim/rec_clean.mrc"))
    angles = read_tilt_angles(str(shared("temsim/tilt.tlt")))
    rec = wbp(da.from_array(ts, chunks=(41, 256, 64)), angles, 80, slab=48).compute()
    assert rec.shape == ref.shape
    assert np.corrcoef(rec.ravel(), ref.ravel())[0, 1] > 0.95


def test_wbp_point_phantom_and_slab_independence():
    # a point at (z, y) = (+6, -10) from the centre of a 33 x 65 slice, sinogram by hand
    nz, ny, w = 33, 65, 4
    angles = np.arange(-60, 61, 2.0)
    ts = np.zeros((angles.size, ny, w), np.float32)
    for i, a in enumerate(np.deg2rad(angles)):
        t = -10 * np.cos(a) - 6 * np.sin(a) + (ny - 1) / 2
        t0 = int(np.floor(t))
        ts[i, t0, :] += 1 - (t - t0)
        ts[i, t0 + 1, :] += t - t0
    rec = wbp_slab(ts, angles, nz)
    z, y = np.unravel_index(np.argmax(rec[:, :, 0]), rec.shape[:2])
    assert (z - (nz - 1) / 2, y - (ny - 1) / 2) == (6, -10)
    whole = wbp(da.from_array(ts, chunks=(angles.size, ny, 4)), angles, nz, slab=4).compute()
    split = wbp(da.from_array(ts, chunks=(angles.size, ny, 4)), angles, nz, slab=1).compute()
    np.testing.assert_allclose(whole, split, rtol=1e-5, atol=1e-6)


def test_tilt_series_prior_on_small_crop(tmp_path):
    pytest.importorskip("topaz")
    ts = mrcfile.read(shared("temsim/tilt_clean.mrc"))[:, :, :32]
    ref = mrcfile.read(shared("temsim/rec_clean.mrc"))[:, :, :32]
    write_mrc(tmp_path / "ts.mrc", ts, voxel=10.0)
    write_mrc(tmp_path / "tomo.mrc", ref, voxel=10.0)
    n = tmp_path / "tomo.zarr"
    convert(ConvertConfig(input=tmp_path / "tomo.mrc", output=n), show_progress=False)
    out = tmp_path / "prior.zarr"
    tlt = shared("temsim/tilt.tlt")
    make_prior(
        PriorConfig(
            noisy=n,
            output=out,
            method="tilt-series",
            tilt_series=tmp_path / "ts.mrc",
            tlt=tlt,
            device="cpu",
        ),
        show_progress=False,
    )
    p = zarr.open_group(str(out))["0"][:]
    assert p.shape == ref.shape
    assert np.corrcoef(p.ravel(), ref.ravel())[0, 1] > 0.5
    bad = tmp_path / "bad.tlt"
    bad.write_text("0\n10\n")
    with pytest.raises(InputError, match="2 tilt angles for 41 images"):
        make_prior(
            PriorConfig(
                noisy=n,
                output=tmp_path / "b.zarr",
                method="tilt-series",
                tilt_series=tmp_path / "ts.mrc",
                tlt=bad,
            ),
            show_progress=False,
        )
    assert not (tmp_path / "b.zarr").exists()


def test_file_prior_grid_must_match(tmp_path, small_mrc):
    n = tmp_path / "n.zarr"
    convert(ConvertConfig(input=small_mrc, output=n), show_progress=False)
    other = write_mrc(tmp_path / "o.mrc", np.zeros((5, 6, 7), np.float32))
    with pytest.raises(InputError, match="prior grid"):
        make_prior(
            PriorConfig(noisy=n, output=tmp_path / "p.zarr", method="file", prior_file=other),
            show_progress=False,
        )
    make_prior(
        PriorConfig(noisy=n, output=tmp_path / "p.zarr", method="file", prior_file=small_mrc),
        show_progress=False,
    )
    np.testing.assert_array_equal(
        zarr.open_group(str(tmp_path / "p.zarr"))["0"][:], mrcfile.read(small_mrc)
    )


def test_projector_is_the_forward_model_of_wbp():
    import dask.array as da

    from scnet_dask.science.recon import project, wbp

    vol = np.zeros((48, 64, 4), np.float32)
    zz, yy = np.mgrid[0:48, 0:64]
    vol[(zz - 24) ** 2 + (yy - 30) ** 2 < 80] = 1
    vol[(zz - 12) ** 2 + (yy - 48) ** 2 < 20] = 2
    ang = np.arange(-90, 90, 1.0)
    ts = project(da.from_array(vol), ang, slab=2)
    assert ts.shape == (180, 64, 4)
    # a projection at 0° is the sum along z
    np.testing.assert_allclose(ts[90].compute(), vol.sum(axis=0), rtol=1e-5, atol=1e-4)
    rec = wbp(ts, ang, 48).compute()
    assert np.corrcoef(rec.ravel(), vol.ravel())[0, 1] > 0.95
    wrong = wbp(project(da.from_array(vol), ang, angle_sign=1), ang, 48).compute()
    assert np.corrcoef(wrong.ravel(), vol.ravel())[0, 1] < 0.6  # the geometry test can fail


def test_wbp_sub_area_equals_a_crop_of_the_full_reconstruction():
    """IMOD's WIDTH/SHIFT: a narrower reconstruction off the detector centre is the same voxels."""
    ts = mrcfile.read(shared("temsim/tilt_clean.mrc"))[:, :, :8]
    angles = read_tilt_angles(str(shared("temsim/tilt.tlt")))
    full = wbp_slab(ts, angles, 40)
    sub = wbp_slab(ts, angles, 40, width=128, offset=20.0)  # rows 64 + 20 .. + 128 of 256
    np.testing.assert_allclose(sub, full[:, 84:212], rtol=1e-5, atol=1e-5)
    lazy = wbp(da.from_array(ts, chunks=(41, 256, 4)), angles, 40, slab=4, width=128, offset=20.0)
    np.testing.assert_allclose(lazy.compute(), sub, rtol=1e-5, atol=1e-5)


def test_tilt_series_prior_of_a_sub_area_and_the_misregistration_warning(tmp_path):
    pytest.importorskip("topaz")
    ts = mrcfile.read(shared("temsim/tilt_clean.mrc"))[:, :, :48]  # wider along the tilt axis
    tomo = mrcfile.read(shared("temsim/rec_clean.mrc"))[:, 84:212, 8:40]  # a sub-area
    write_mrc(tmp_path / "ts.mrc", ts, voxel=10.0)
    write_mrc(tmp_path / "tomo.mrc", tomo, voxel=10.0)
    n = tmp_path / "tomo.zarr"
    convert(ConvertConfig(input=tmp_path / "tomo.mrc", output=n, chunks=32), show_progress=False)
    common = dict(noisy=n, method="tilt-series", tilt_series=tmp_path / "ts.mrc",
                  tlt=shared("temsim/tilt.tlt"), device="cpu", slice_start=8)  # fmt: skip
    import logging

    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("scnet_dask.commands.prior")
    logger.addHandler(handler)  # not caplog: the CLI tests reconfigure the package's logging
    s = make_prior(PriorConfig(output=tmp_path / "p.zarr", area_offset=20, **common),
                   show_progress=False)  # fmt: skip
    p = zarr.open_group(str(tmp_path / "p.zarr"))["0"][:]
    assert p.shape == tomo.shape
    assert np.corrcoef(p.ravel(), tomo.ravel())[0, 1] > 0.5
    assert not any(s["registration"]["shift_voxels"]) and not records
    s = make_prior(PriorConfig(output=tmp_path / "q.zarr", area_offset=-20, **common),
                   show_progress=False)  # fmt: skip
    logger.removeHandler(handler)
    assert any("misregistered" in m for m in records) and any(s["registration"]["shift_voxels"])
    with pytest.raises(InputError, match="outside the 256-pixel detector"):
        make_prior(PriorConfig(output=tmp_path / "r.zarr", area_offset=80, **common),
                   show_progress=False)  # fmt: skip
    assert not (tmp_path / "r.zarr").exists()
