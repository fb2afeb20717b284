"""``prior``: the smoothed volume SC-Net's smoothness and expectancy losses pull towards.

Methods: ``gaussian`` (out of core, dask-image), ``topaz-3d`` (Topaz's pretrained 3-D denoiser
on blended tiles), ``tilt-series`` (the paper's: Topaz 2-D on the projections, then weighted
back-projection) and ``file`` (a user's own volume on the same grid).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import torch
from dask_image.ndfilters import gaussian_filter

from scnet_dask._device import resolve_device
from scnet_dask.config import PriorConfig
from scnet_dask.convert import provenance_entry, write_volume_zarr
from scnet_dask.errors import InputError
from scnet_dask.io import Volume, open_source, store_of
from scnet_dask.io._atomic import atomic_output

if TYPE_CHECKING:
    from scnet_dask.predict import TopazPredictor

__all__ = ["make_prior", "topaz_3d_model", "topaz_predictor", "TOPAZ_HALO", "TOPAZ_REACH"]

log = logging.getLogger(__name__)

_TOPAZ_2D_FILE = "unet_L2_v0.2.2.sav"
#: Halo (voxels) of the blended Topaz 3-D tiles.
TOPAZ_HALO = 24
#: The part of that halo given near-zero weight (Topaz reaches farther: blended, not exact).
TOPAZ_REACH = TOPAZ_HALO - 8
_TOPAZ_FILES = {"unet-3d-10a": "unet-3d-10a-v0.2.4.sav", "unet-3d-20a": "unet-3d-20a-v0.2.4.sav"}


def _topaz_weights(filename: str) -> Path:
    """Path of a pretrained weight file shipped in the topaz-em wheel, or a clear error."""
    try:
        import topaz
    except ImportError as e:
        raise InputError(
            "topaz-em is not installed; install it with 'pip install --no-deps topaz-em'"
        ) from e
    path = Path(topaz.__file__).parent / "pretrained" / "denoise" / filename
    if not path.is_file():
        raise InputError(f"{path}: Topaz weights not found")
    return path


@lru_cache(maxsize=4)
def topaz_3d_model(name: str, device: str = "cpu") -> torch.nn.Module:
    """Load Topaz's pretrained 3-D denoiser ``name`` from the installed ``topaz-em`` wheel.

    The weights are read with ``torch.load(weights_only=True)`` into ``UDenoiseNet3D``; the
    model is cached per process.

    Raises
    ------
    InputError
        If topaz-em or its weight file is not installed.

    """
    if name not in _TOPAZ_FILES:
        raise InputError(
            f"unknown Topaz 3-D model {name!r}; expected one of {sorted(_TOPAZ_FILES)}"
        )
    path = _topaz_weights(_TOPAZ_FILES[name])
    from topaz.denoising.models import UDenoiseNet3D

    model = UDenoiseNet3D(base_width=7)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        state = state.state_dict()
    model.load_state_dict(state)
    return model.eval().to(device)


@lru_cache(maxsize=2)
def topaz_2d_model(device: str = "cpu") -> torch.nn.Module:
    """Load Topaz's pretrained 2-D denoiser (``unet``, L2, v0.2.2) from the topaz-em wheel."""
    path = _topaz_weights(_TOPAZ_2D_FILE)
    from topaz.denoising.models import UDenoiseNet

    model = UDenoiseNet(base_width=11, top_width=5)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def topaz_denoise_2d(images: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Denoise a stack of (n, Y, X) projections one by one with Topaz's 2-D model."""
    model = topaz_2d_model(device)
    out = np.empty(images.shape, dtype=np.float32)
    with torch.no_grad():
        for i, img in enumerate(images.astype(np.float32)):
            mu, sd = float(img.mean()), float(img.std()) or 1.0
            t = torch.from_numpy((img - mu) / sd)[None, None].to(device)
            out[i] = model(t)[0, 0].float().cpu().numpy() * sd + mu
    return out


def _tilt_series(cfg: PriorConfig, nz: int, shape: tuple[int, ...], device: str) -> da.Array:
    from scnet_dask.recon import read_tilt_angles, wbp

    if cfg.tilt_series is None or cfg.tlt is None:
        raise InputError("--method tilt-series needs --tilt-series and --tlt")
    ts = open_source(cfg.tilt_series).data
    angles = read_tilt_angles(str(cfg.tlt))
    if ts.shape[0] != angles.size:
        raise InputError(
            f"{cfg.tlt}: {angles.size} tilt angles for {ts.shape[0]} images in {cfg.tilt_series}"
        )
    expect = (shape[1], shape[2])
    if tuple(ts.shape[1:]) != expect:
        raise InputError(
            f"{cfg.tilt_series}: images of {tuple(ts.shape[1:])} do not match the tomogram's "
            f"(y, x) = {expect}"
        )
    topaz_2d_model(device)  # fail early if the weights are missing
    den = (
        ts.astype(np.float32)
        .rechunk((1, -1, -1))
        .map_blocks(topaz_denoise_2d, device=device, dtype=np.float32)
    )
    return wbp(den, angles, nz, tilt_axis=cfg.tilt_axis, angle_sign=cfg.angle_sign)


def _gaussian(data: da.Array, sigma: float) -> da.Array:
    return gaussian_filter(data.astype(np.float32), sigma=sigma, mode="reflect")


def topaz_predictor(vol: Volume, name: str, device: str) -> TopazPredictor:
    """Topaz 3-D tile predictor for ``vol``, normalised by the volume's statistics.

    Uses the stored statistics of our OME-Zarr, else computes them (one Dask pass).

    Raises
    ------
    InputError
        If topaz-em or the weights of ``name`` are missing.

    """
    from scnet_dask.predict import TopazPredictor
    from scnet_dask.stats import compute_statistics

    topaz_3d_model(name, device)  # fail early if the weights are missing
    stats = vol.attrs.get("statistics") or compute_statistics(vol.data)
    return TopazPredictor(name, device, float(stats["mean"]), float(stats["std"]) or 1.0)


def _topaz(vol: Volume, name: str, device: str, tile: int) -> da.Array:
    """Topaz 3-D on blended tiles (see :mod:`scnet_dask.tiling`).

    Topaz's U-Net reaches farther than any affordable halo (> 63 voxels), so tiles are not
    exact: ``TOPAZ_HALO`` voxels on each side (16 of near-zero weight, 8 of blend) hide the
    seams. Tiles are aligned to 32 voxels, the network's pooling depth.
    """
    from scnet_dask.tiling import TilePlan, overlap_add, plan_halo

    pred = topaz_predictor(vol, name, device)
    data = vol.data.astype(np.float32).rechunk(tuple(min(tile, s) for s in vol.data.shape))
    halo, margin = plan_halo(TOPAZ_HALO, TOPAZ_REACH)
    shape = (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))
    plan = TilePlan(shape, data.chunks, halo, margin, 32, "gaussian", 0.0)
    return overlap_add(data, pred, plan, reader=store_of(vol.data), source_name=str(vol.path))


def make_prior(cfg: PriorConfig, show_progress: bool = True) -> dict[str, Any]:
    """Build the prior volume for ``cfg.noisy`` into the OME-Zarr ``cfg.output``.

    Returns
    -------
    dict
        Output path, method, shape and statistics.

    """
    vol = open_source(cfg.noisy)
    if cfg.method == "gaussian":
        data = _gaussian(vol.data, cfg.sigma)
        details: dict[str, Any] = {"sigma_voxels": cfg.sigma}
    elif cfg.method == "tilt-series":
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
    attrs = {
        "name": Path(cfg.output).name,
        "source_path": str(Path(cfg.noisy).resolve()),
        "source": vol.attrs.get("source", {}),
        "voxel_size_angstrom": list(vol.voxel_size_angstrom),
        "voxel_size_found": vol.voxel_size_found,
        "provenance": list(vol.attrs.get("provenance", []))
        + [provenance_entry("prior", method=cfg.method, **details)],
    }
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
    return {
        "output": str(cfg.output),
        "method": cfg.method,
        "shape": list(data.shape),
        "statistics": stats,
    }
