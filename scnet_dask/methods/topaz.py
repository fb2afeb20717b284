"""Topaz's pretrained denoisers (Bepler et al. 2020), from the ``topaz-em`` wheel.

The 3-D models (``unet-3d-10a``, ``unet-3d-20a``) denoise tomograms on blended tiles (the
``topaz-3d`` method, also a ``prior``); the 2-D model denoises projections for the
``tilt-series`` prior. Weights are read with ``torch.load(weights_only=True)`` and cached per
process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field

from scnet_dask.errors import InputError
from scnet_dask.methods._unet import volume_normalisation
from scnet_dask.methods.base import Geometry, Method, Options, PredictContext, TilePredictor
from scnet_dask.methods.runtime import forward_normalised

if TYPE_CHECKING:
    from scnet_dask.io import Volume

__all__ = [
    "TopazOptions",
    "TopazPredictor",
    "Topaz3d",
    "topaz_3d_model",
    "topaz_2d_model",
    "topaz_denoise_2d",
    "topaz_predictor",
    "TOPAZ_HALO",
    "TOPAZ_REACH",
    "TOPAZ_MULTIPLE",
]

_TOPAZ_2D_FILE = "unet_L2_v0.2.2.sav"
_TOPAZ_FILES = {"unet-3d-10a": "unet-3d-10a-v0.2.4.sav", "unet-3d-20a": "unet-3d-20a-v0.2.4.sav"}
#: Halo (voxels) of the blended Topaz 3-D tiles of the prior.
TOPAZ_HALO = 24
#: The part of that halo given near-zero weight (Topaz reaches farther: blended, not exact).
TOPAZ_REACH = TOPAZ_HALO - 8
#: Tile edges must be multiples of this (the U-Net's pooling depth).
TOPAZ_MULTIPLE = 32


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
    """Load Topaz's pretrained 3-D denoiser ``name`` into ``UDenoiseNet3D`` (cached).

    Raises
    ------
    InputError
        If topaz-em or its weight file is not installed, or ``name`` is unknown.

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


@dataclass(frozen=True)
class TopazPredictor:
    """Topaz's pretrained 3-D denoiser on (B, z, y, x) tiles, with one global normalisation.

    Topaz normalises each input by its own mean and std; on tiles that would give every tile
    a different scale, so the volume's statistics (``mean``, ``std``) are used instead.
    """

    model: str = "unet-3d-10a"
    device: str = "cpu"
    mean: float = 0.0
    std: float = 1.0
    geometry: Geometry = field(default=Geometry(margin=(TOPAZ_REACH,) * 3, multiple=TOPAZ_MULTIPLE))

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Return the denoised tiles, same shape, float32, in the input's units."""
        net = topaz_3d_model(self.model, self.device)
        return forward_normalised(net, tiles, self.mean, self.std, self.device, amp=False)


def topaz_predictor(vol: Volume, name: str, device: str) -> TopazPredictor:
    """Topaz 3-D tile predictor for ``vol``, normalised by the volume's statistics.

    Uses the stored statistics of our OME-Zarr, else computes them (one Dask pass).

    Raises
    ------
    InputError
        If topaz-em or the weights of ``name`` are missing.

    """
    topaz_3d_model(name, device)  # fail early if the weights are missing
    mean, std = volume_normalisation(vol)
    return TopazPredictor(name, device, mean, std)


class TopazOptions(Options):
    """Options of ``denoise --method topaz-3d``."""

    topaz_model: Literal["unet-3d-10a", "unet-3d-20a"] = Field(
        "unet-3d-10a", description="Topaz pretrained 3-D model."
    )


class Topaz3d(Method):
    """Topaz's pretrained 3-D denoiser (blended tiles: it reaches farther than any halo)."""

    name = "topaz-3d"
    summary = "Topaz's pretrained 3-D denoiser (topaz-em, installed with --no-deps)."
    denoise_options = TopazOptions

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """A :class:`TopazPredictor` normalised by the volume's statistics."""
        pred = topaz_predictor(ctx.volume, options.topaz_model, ctx.device)
        return pred, {"topaz_model": options.topaz_model}
