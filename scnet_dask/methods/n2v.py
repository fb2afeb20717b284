"""Noise2Void (Krull et al. 2019) on SC-Net's U-Net: single-voxel blind spots, masked MSE.

Each of 0.2 % of the voxels (CAREamics' default) is replaced by a random voxel of its 5³
neighbourhood; the loss is the mean squared error on those voxels only. No prior, no
post-filter by default.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from pydantic import Field

from scnet_dask.methods._unet import BlindSpotOptions, NormaliseOption, UNetMethod
from scnet_dask.methods.base import TrainState
from scnet_dask.model.blindspot import blind_spot_replace
from scnet_dask.model.losses import n2v_losses

__all__ = ["N2vTrainOptions", "N2vDenoiseOptions", "N2v"]


class N2vTrainOptions(BlindSpotOptions):
    """Options of ``train --method n2v``: single voxels at 0.2 %."""

    swap_size: int = Field(1, ge=1, description="Blind-spot region edge in voxels (odd).")
    swap_ratio: float = Field(0.002, gt=0, le=1, description="Blind-spot regions per voxel.")


class N2vDenoiseOptions(NormaliseOption):
    """Options of ``denoise --method n2v``."""

    post_sigma: float = Field(0.0, ge=0, le=4, description="Gaussian σ (voxels) after the network.")


class N2v(UNetMethod):
    """Noise2Void: masked MSE on single-voxel blind spots."""

    name = "n2v"
    summary = "Noise2Void: single-voxel blind spots, masked MSE, no prior."
    inputs = ("noisy",)
    train_options = N2vTrainOptions
    denoise_options = N2vDenoiseOptions
    log_terms = ("total", "rec")

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Replace, forward, masked MSE, one Adam step."""
        o: N2vTrainOptions = state.options
        n = torch.from_numpy(batch["noisy"]).to(state.device, non_blocking=True)
        src, mask = blind_spot_replace(
            n, None, region=o.swap_size, window=o.swap_window, ratio=o.swap_ratio,
            mode="internal", generator=generator, unit=o.swap_ratio_unit,
            strict=o.blind_spot_strict,
        )  # fmt: skip
        out = self.forward(state, src, train).float()
        terms = n2v_losses(out, n, mask)
        if train:
            state.update(terms["total"], "model")
        return {"total": terms["total"], "rec": terms["rec"]}
