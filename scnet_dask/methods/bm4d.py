"""The BM4D baseline (the ``bm4d`` package, Mäkinen, Azzari & Foi) on blended tiles.

BM4D's block matching reaches beyond any halo we can afford, so tiles are blended over
:data:`BM4D_REACH`, not exact. Its licence allows non-commercial use only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from scnet_dask.errors import InputError
from scnet_dask.methods.base import Geometry, Method, Options, PredictContext, TilePredictor
from scnet_dask.methods.runtime import per_tile
from scnet_dask.science.stats import estimate_noise_sigma

__all__ = ["Bm4dOptions", "Bm4dPredictor", "Bm4d", "BM4D_REACH"]

log = logging.getLogger(__name__)

#: Voxels BM4D's result at one voxel depends on, roughly: its 7³ block-matching search window
#: and 5³ blocks in each of its two stages. Tiles are blended over this reach, not exact.
BM4D_REACH = 12


class Bm4dOptions(Options):
    """Options of ``denoise --method bm4d``."""

    noise_sigma: float | None = Field(
        None, gt=0, description="Noise σ in the input's units (default: estimated)."
    )
    bm4d_profile: Literal["np", "refilter"] = Field("np", description="BM4D profile.")


@dataclass(frozen=True)
class Bm4dPredictor:
    """BM4D on each (z, y, x) tile of a (B, z, y, x) batch, one tile at a time.

    Parameters
    ----------
    noise_sigma
        Standard deviation of the (assumed white) noise, in the input's units.
    profile
        ``"np"`` (normal) or ``"refilter"``; see :class:`bm4d.BM4DProfile`.

    """

    noise_sigma: float
    profile: str = "np"
    geometry: Geometry = field(default=Geometry(margin=(BM4D_REACH,) * 3))

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Denoise each tile of the (B, z, y, x) batch; float32, same units."""
        import bm4d

        return per_tile(lambda t: bm4d.bm4d(t, self.noise_sigma, self.profile), tiles, "bm4d")


class Bm4d(Method):
    """BM4D with σ given or estimated (wavelet MAD, median over chunks)."""

    name = "bm4d"
    summary = "BM4D (bm4d package, non-commercial licence; slow), σ given or estimated."
    denoise_options = Bm4dOptions

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """A :class:`Bm4dPredictor`; σ from the options or the chunked wavelet estimate."""
        try:
            import bm4d  # noqa: F401
        except ImportError as e:
            raise InputError(
                f"--method bm4d needs the bm4d package: pip install 'scnet-dask[bm4d]' ({e})"
            ) from None
        if options.noise_sigma is not None:
            sigma, how = float(options.noise_sigma), "given"
        else:

            sigma = estimate_noise_sigma(ctx.volume.data.astype(np.float32))
            how = "estimated"
            log.info("%s: noise σ %.4g (wavelet estimate)", ctx.volume.path, sigma)
        details = {
            "noise_sigma": sigma,
            "noise_sigma_source": how,
            "bm4d_profile": options.bm4d_profile,
        }
        return Bm4dPredictor(sigma, options.bm4d_profile), details
