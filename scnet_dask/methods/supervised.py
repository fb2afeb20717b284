"""Supervised restoration of fast-scanned volume EM ("fast scan, AI restore").

``train FAST --target SLOW --method supervised``: a network learns to map a fast-scan (noisy)
stack to a registered slow-scan (clean) stack of the same region, with the seed project's loss
L1 + (1 − SSIM per section). The default network is 2.5-D (k neighbouring sections in, the
centre section out; :mod:`scnet_dask.model.slice_unet`), the 3-D U-Net is an option. Patches
are normalised by each stack's own statistics; ``denoise`` returns the target's units.

Before training, the two stacks are checked: same grid and voxel size (the training engine),
and registered (:func:`scnet_dask.io.registration.check_registered` on the coarsest pyramid level).

Not implemented: the seed's emulation of an interleaved slow/fast acquisition (slow frames
every n sections as extra input).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from scnet_dask.io.registration import check_registered
from scnet_dask.methods._vem import VemDenoiseOptions, VemMethod, VemNetOptions
from scnet_dask.methods.base import TrainState

__all__ = ["SupervisedTrainOptions", "Supervised"]


class SupervisedTrainOptions(VemNetOptions):
    """Options of ``train --method supervised`` (the positional input is the fast stack)."""

    target: Path = Field(description="Registered slow-scan (clean) stack (OME-Zarr), same grid.")
    check_registration: bool = Field(
        True, description="Refuse a target that is not registered with the input."
    )


class Supervised(VemMethod):
    """Fast-scan → slow-scan restoration, L1 + (1 − SSIM)."""

    name = "supervised"
    summary = "Supervised fast→slow restoration (vEM): train FAST --target SLOW."
    inputs = ("input", "target")
    train_options = SupervisedTrainOptions
    denoise_options = VemDenoiseOptions
    output_name = "target"

    def prepare(self, config: Any, show_progress: bool = True) -> None:
        """Refuse a target that is not registered with the input (coarsest pyramid level)."""
        if config.options.check_registration:

            check_registered(config.noisy, config.options.target)

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """The network on the fast patch against the slow patch; one Adam step."""
        x = torch.from_numpy(batch["input"]).to(state.device, non_blocking=True)
        t = torch.from_numpy(batch["target"]).to(state.device, non_blocking=True)
        out = self.run(state, x, train)
        terms = self.loss(state.options, out, self.centre(state.options, t))
        if train:
            state.update(terms["total"], "model")
        return terms
