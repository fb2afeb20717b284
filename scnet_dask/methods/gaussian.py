"""The Gaussian low-pass baseline: σ voxels on each tile (exact on the tiling)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field
from scipy.ndimage import gaussian_filter

from scnet_dask.methods.base import Geometry, Method, Options, PredictContext, TilePredictor
from scnet_dask.predict import per_tile

__all__ = ["GaussianOptions", "GaussianPredictor", "Gaussian"]


class GaussianOptions(Options):
    """Options of ``denoise --method gaussian``."""

    sigma: float = Field(1.0, gt=0, le=16, description="Gaussian σ in voxels.")


@dataclass(frozen=True)
class GaussianPredictor:
    """Gaussian low-pass of σ voxels (one, or per axis z, y, x) on each (z, y, x) tile."""

    sigma: float | tuple[float, float, float] = 1.0

    @property
    def receptive_margin(self) -> int:
        """Voxels the filter reaches (scipy truncates at 4 σ)."""
        return int(4.0 * float(np.max(self.sigma)) + 0.5)

    @property
    def geometry(self) -> Geometry:
        """Reach of the filter, no alignment, no post-filter."""
        r = self.receptive_margin
        return Geometry(margin=(r, r, r))

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Filter each (z, y, x) tile of the (B, z, y, x) batch; float32."""
        return per_tile(lambda t: gaussian_filter(t, self.sigma, mode="reflect"), tiles)


class Gaussian(Method):
    """Gaussian filter of σ voxels."""

    name = "gaussian"
    summary = "Gaussian low-pass of --sigma voxels (baseline, no training)."
    denoise_options = GaussianOptions

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """A :class:`GaussianPredictor` of ``options.sigma``."""
        return GaussianPredictor(options.sigma), {"sigma_voxels": options.sigma}
