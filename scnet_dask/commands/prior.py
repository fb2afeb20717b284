"""``prior``: the smoothed volume SC-Net's smoothness and expectancy losses pull towards.

Methods: ``gaussian`` (out of core, dask-image), ``topaz-3d`` (Topaz's pretrained 3-D denoiser
on blended tiles), ``tilt-series`` (the paper's: Topaz 2-D on the projections, then weighted
back-projection) and ``file`` (a user's own volume on the same grid).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask_image.ndfilters import gaussian_filter

from scnet_dask.config import PriorConfig
from scnet_dask.errors import InputError, nonfinite_input
from scnet_dask.io import Volume, open_source, store_of
from scnet_dask.io._atomic import refuse_overlap
from scnet_dask.io.output import atomic_output
from scnet_dask.io.provenance import volume_attrs
from scnet_dask.io.registration import measure_registration, misregistered
from scnet_dask.io.store import write_volume_zarr
from scnet_dask.methods.topaz import (
    TOPAZ_HALO,
    TOPAZ_MULTIPLE,
    TOPAZ_REACH,
    topaz_2d_model,
    topaz_denoise_2d,
    topaz_predictor,
)
from scnet_dask.model.device import resolve_device
from scnet_dask.science.recon import read_tilt_angles, wbp
from scnet_dask.tiling.blend import TilePlan
from scnet_dask.tiling.graph import overlap_add
from scnet_dask.tiling.halo import plan_halo

__all__ = ["make_prior"]

log = logging.getLogger(__name__)


def _tilt_series(cfg: PriorConfig, nz: int, shape: tuple[int, ...], device: str) -> da.Array:

    if cfg.tilt_series is None or cfg.tlt is None:
        raise InputError("--method tilt-series needs --tilt-series and --tlt")
    ts = open_source(cfg.tilt_series).data
    angles = read_tilt_angles(str(cfg.tlt))
    if ts.shape[0] != angles.size:
        raise InputError(
            f"{cfg.tlt}: {angles.size} tilt angles for {ts.shape[0]} images in {cfg.tilt_series}"
        )
    # (across, along) the tilt axis, for the images and the tomogram
    ax = (1, 2) if cfg.tilt_axis == "x" else (2, 1)
    img = (int(ts.shape[ax[0]]), int(ts.shape[ax[1]]))
    tomo = (int(shape[ax[0]]), int(shape[ax[1]]))
    if img[0] < tomo[0] or img[1] < tomo[1]:
        raise InputError(
            f"{cfg.tilt_series}: images of {tuple(ts.shape[1:])} are smaller than the tomogram's "
            f"(y, x) = {(shape[1], shape[2])}; a tomogram can only be a sub-area of its images"
        )
    half_room = (img[0] - tomo[0]) / 2
    if abs(cfg.area_offset) > half_room:
        raise InputError(
            f"--area-offset {cfg.area_offset:g} puts the {tomo[0]}-voxel-wide tomogram outside "
            f"the {img[0]}-pixel detector of {cfg.tilt_series} (|offset| <= {half_room:g})"
        )
    start = (img[1] - tomo[1]) // 2 if cfg.slice_start is None else cfg.slice_start
    if start + tomo[1] > img[1]:
        raise InputError(
            f"--slice-start {start} + the tomogram's {tomo[1]} slices exceed the {img[1]} image "
            f"rows/columns along the tilt axis of {cfg.tilt_series}"
        )
    if img != tomo:
        log.info("tilt-series prior: sub-area %s of images %s, offset %g px, slices from %d",
                 tomo, img, cfg.area_offset, start)  # fmt: skip
    along = slice(start, start + tomo[1])
    ts = ts[:, :, along] if cfg.tilt_axis == "x" else ts[:, along, :]
    topaz_2d_model(device)  # fail early if the weights are missing
    den = (
        ts.astype(np.float32)
        .rechunk((1, -1, -1))
        .map_blocks(topaz_denoise_2d, device=device, dtype=np.float32)
    )
    return wbp(den, angles, nz, tilt_axis=cfg.tilt_axis, angle_sign=cfg.angle_sign,
               z_offset=cfg.z_offset, width=tomo[0], offset=cfg.area_offset)  # fmt: skip


def _gaussian(data: da.Array, sigma: float) -> da.Array:
    return gaussian_filter(data.astype(np.float32), sigma=sigma, mode="reflect")


def _topaz(vol: Volume, name: str, device: str, tile: int) -> da.Array:
    """Topaz 3-D on blended tiles (see :mod:`scnet_dask.tiling.graph`).

    Topaz's U-Net reaches farther than any affordable halo (> 63 voxels), so tiles are not
    exact: ``TOPAZ_HALO`` voxels on each side (16 of near-zero weight, 8 of blend) hide the
    seams. Tiles are aligned to 32 voxels, the network's pooling depth.
    """
    pred = topaz_predictor(vol, name, device)
    data = vol.data.astype(np.float32).rechunk(tuple(min(tile, s) for s in vol.data.shape))
    halo, margin = plan_halo(TOPAZ_HALO, TOPAZ_REACH)
    shape = (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))
    plan = TilePlan(shape, data.chunks, halo, margin, TOPAZ_MULTIPLE, "gaussian", 0.0)
    return overlap_add(data, pred, plan, reader=store_of(vol.data), source_name=str(vol.path))


def _warn_if_pixel_sizes_differ(cfg: PriorConfig, vol: Volume) -> None:
    """The tilt series' pixel and the tomogram's voxel must agree (WBP works in voxels)."""
    ts = open_source(cfg.tilt_series) if cfg.tilt_series is not None else None
    if ts is None:
        return
    px, vx = ts.voxel_size_angstrom[2], vol.voxel_size_angstrom[2]
    if not (ts.voxel_size_found and vol.voxel_size_found):
        log.warning(
            "%s: pixel size %.4g Å and %s: voxel size %.4g Å: one is a placeholder; the "
            "reconstruction assumes they are equal (check the binning)",
            cfg.tilt_series, px, cfg.noisy, vx,
        )  # fmt: skip
    elif abs(px - vx) > 0.05 * max(px, vx):
        log.warning(
            "%s: pixel size %.4g Å differs from the voxel size %.4g Å of %s; the "
            "reconstruction assumes they are equal (bin the tilt series to the tomogram's)",
            cfg.tilt_series, px, vx, cfg.noisy,
        )  # fmt: skip


def make_prior(cfg: PriorConfig, show_progress: bool = True) -> dict[str, Any]:
    """Build the prior volume for ``cfg.noisy`` into the OME-Zarr ``cfg.output``.

    Returns
    -------
    dict
        Output path, method, shape and statistics.

    """
    refuse_overlap(cfg.output, cfg.noisy, cfg.prior_file, cfg.tilt_series, cfg.tlt)
    vol = open_source(cfg.noisy)
    bad = int((vol.attrs.get("statistics") or {}).get("n_nonfinite", 0) or 0)
    if bad:  # a prior of NaN voxels would train SC-Net towards NaN
        raise nonfinite_input(cfg.noisy, f" ({bad} voxels)")
    if cfg.method == "gaussian":
        data = _gaussian(vol.data, cfg.sigma)
        details: dict[str, Any] = {"sigma_voxels": cfg.sigma}
    elif cfg.method == "tilt-series":
        _warn_if_pixel_sizes_differ(cfg, vol)
        dev = str(resolve_device(cfg.device))
        data = _tilt_series(cfg, int(vol.data.shape[0]), tuple(vol.data.shape), dev)
        details = {
            "tilt_series": str(Path(str(cfg.tilt_series)).resolve()),
            "tlt": str(cfg.tlt),
            "tilt_axis": cfg.tilt_axis,
            "angle_sign": cfg.angle_sign,
            "denoiser": "topaz unet_L2_v0.2.2",
            "reconstruction": "WBP (Ram-Lak)",
        }
    elif cfg.method == "topaz-3d":
        dev = str(resolve_device(cfg.device))
        data = _topaz(vol, cfg.model, dev, cfg.tile)
        details = {"model": cfg.model, "tile": cfg.tile, "halo_voxels": TOPAZ_HALO}
    else:
        if cfg.prior_file is None:
            raise InputError("--method file needs --prior-file")
        pf = open_source(cfg.prior_file)
        if tuple(pf.data.shape) != tuple(vol.data.shape):
            raise InputError(
                f"{cfg.prior_file}: prior grid {tuple(pf.data.shape)} differs from the noisy grid "
                f"{tuple(vol.data.shape)} of {cfg.noisy}"
            )
        data = pf.data.astype(np.float32)
        details = {"prior_file": str(Path(cfg.prior_file).resolve())}
    attrs = volume_attrs(cfg.output, "prior", vol, method=cfg.method, **details)
    chunk = 128
    if vol.format == "zarr":
        chunk = int(vol.data.chunksize[0]) or 128
    with atomic_output(cfg.output, overwrite=cfg.overwrite) as tmp:
        stats = write_volume_zarr(
            data,
            tmp,
            vol.voxel_size_angstrom,
            attrs,
            chunk,
            3,
            None,
            show_progress,
            desc=f"prior {cfg.method}",
        )
    summary: dict[str, Any] = {
        "output": str(cfg.output),
        "method": cfg.method,
        "shape": list(data.shape),
        "statistics": stats,
    }
    if cfg.method in ("tilt-series", "file") and vol.format == "zarr":
        summary["registration"] = _warn_if_misregistered(cfg)
    return summary


def _warn_if_misregistered(cfg: PriorConfig) -> dict[str, Any]:
    """Compare the written prior with the noisy volume (coarsest level); warn on an offset."""
    m = measure_registration(cfg.noisy, cfg.output)
    if misregistered(m):
        hint = (
            " (check --tilt-axis, --angle-sign, --area-offset, --slice-start and --z-offset "
            "against the reconstruction's)"
            if cfg.method == "tilt-series"
            else ""
        )
        log.warning(
            "%s: the prior matches %s best shifted by %s voxels (z, y, x): correlation %.2f "
            "there vs %.2f in place; it is misregistered%s",
            cfg.output, cfg.noisy, tuple(m["shift_voxels"]), m["best_correlation"],
            m["correlation"], hint,
        )  # fmt: skip
    return m
