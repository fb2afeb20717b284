"""The Gaussian low-pass baseline: σ voxels on each tile (exact on the tiling)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field
from scipy.ndimage import gaussian_filter

from scnet_dask.methods.base import Geometry, Method, Options, PredictContext, TilePredictor
from scnet_dask.methods.runtime import per_tile

__all__ = ["GaussianOptions", "GaussianPredictor", "Gaussian"]


class GaussianOptions(Options):
    """Options of ``denoise --method gaussian``."""

    sigma: float = Field(1.0, gt=0, le=16, description="Gaussian σ in voxels.")
    sigma_z: float | None = Field(
        None,
        ge=0,
        le=16,
        description="σ along z in voxels (default: --sigma; 0: a 2-D filter of each section, "
        "for anisotropic vEM stacks).",
    )


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
        s = np.broadcast_to(np.asarray(self.sigma, dtype=float), (3,))
        r = tuple(int(4.0 * float(v) + 0.5) for v in s)
        return Geometry(margin=(r[0], r[1], r[2]))

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Filter each (z, y, x) tile of the (B, z, y, x) batch; float32."""
        return per_tile(lambda t: gaussian_filter(t, self.sigma, mode="reflect"), tiles)


class Gaussian(Method):
    """Gaussian filter of σ voxels."""

    name = "gaussian"
    summary = "Gaussian low-pass of --sigma voxels (baseline, no training)."
    denoise_options = GaussianOptions

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """A :class:`GaussianPredictor` of ``options.sigma`` (``sigma_z`` along z)."""
        if options.sigma_z is None:
            return GaussianPredictor(options.sigma), {"sigma_voxels": options.sigma}
        s = (float(options.sigma_z), float(options.sigma), float(options.sigma))
        return GaussianPredictor(s), {"sigma_voxels": list(s)}
