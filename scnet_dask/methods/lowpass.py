"""The low-pass baseline: a Gaussian whose frequency response is 0.5 at a resolution in Å."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from pydantic import Field

from scnet_dask.errors import InputError
from scnet_dask.methods.base import Method, Options, PredictContext, TilePredictor
from scnet_dask.methods.gaussian import GaussianPredictor

__all__ = ["LowpassOptions", "Lowpass", "lowpass_sigma_voxels"]

log = logging.getLogger(__name__)


class LowpassOptions(Options):
    """Options of ``denoise --method lowpass``."""

    cutoff_angstrom: float = Field(
        40.0, gt=0, description="Resolution (Å) where the filter's response falls to 0.5."
    )


def lowpass_sigma_voxels(
    cutoff_angstrom: float, voxel_size_angstrom: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Gaussian σ per axis (voxels) whose frequency response is 0.5 at ``1 / cutoff_angstrom``.

    The response of a Gaussian of σ (Å) is ``exp(-2 π² σ² f²)``; 0.5 at ``f_c`` gives
    ``σ = sqrt(ln 2 / 2) / (π f_c)``.
    """
    s = float(np.sqrt(np.log(2.0) / 2.0) / np.pi * cutoff_angstrom)
    v = voxel_size_angstrom
    return (s / v[0], s / v[1], s / v[2])


class Lowpass(Method):
    """Gaussian low-pass defined by its cut-off in Å (anisotropic voxels handled)."""

    name = "lowpass"
    summary = "Gaussian low-pass with response 0.5 at --cutoff-angstrom (baseline)."
    denoise_options = LowpassOptions

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """A Gaussian of the σ per axis that puts the response 0.5 at the cut-off.

        The cut-off is in Å, so the voxel size matters: none (0) is refused, a placeholder
        (1 Å) warned about with both figures.
        """
        vol = ctx.volume
        voxel = vol.voxel_size_angstrom
        if any(v <= 0 for v in voxel):
            raise InputError(
                f"{vol.path}: --method lowpass needs the voxel size, and this volume has none "
                f"({voxel} Å); convert it with --voxel-size"
            )
        if not vol.voxel_size_found:
            log.warning(
                "%s: voxel size %s Å looks like a placeholder; the --cutoff-angstrom %g Å "
                "low-pass assumes it is real (check it, or convert with --voxel-size)",
                vol.path, voxel, options.cutoff_angstrom,
            )  # fmt: skip
        sigma = lowpass_sigma_voxels(options.cutoff_angstrom, voxel)
        details = {"cutoff_angstrom": options.cutoff_angstrom, "sigma_voxels": sigma}
        return GaussianPredictor(sigma), details
