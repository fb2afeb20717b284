"""Even/odd Noise2Noise (cryoCARE's recipe) on SC-Net's U-Net.

The two half tomograms reconstructed from the even and the odd frames (or tilts) see the same
specimen with independent noise; a network trained to map one to the other, at the same
locations and both ways, learns the noise-free signal. Warp, AreTomo3 and RELION write the
halves; ``simulate`` writes them too (``rec_even``, ``rec_odd``).

``train EVEN --odd ODD --method n2n``; ``denoise`` applies the network to the volume it is given
(the full tomogram, or either half), normalised by that volume's own statistics, so a half and a
sum or mean of the halves are all on the scale the network was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from scnet_dask.methods._unet import NormaliseOption, UNetMethod, UNetOptions
from scnet_dask.methods.base import TrainState

__all__ = ["N2nTrainOptions", "N2nDenoiseOptions", "N2n"]


class N2nTrainOptions(UNetOptions):
    """Options of ``train --method n2n`` (the positional input is the even half)."""

    odd: Path | None = Field(
        None,
        description="Odd half (OME-Zarr), on the grid of the even half; with --dataset the "
        "halves come from the dataset.",
    )
    upsample: bool = Field(
        False, description="SC-Net's 2x nearest up-sampling block (axes: --upsample-axes)."
    )


class N2nDenoiseOptions(NormaliseOption):
    """Options of ``denoise --method n2n``."""

    post_sigma: float = Field(0.0, ge=0, le=4, description="Gaussian σ (voxels) after the network.")
    normalise: Literal["input", "checkpoint"] = Field(
        "input",
        description="Normalise tiles by the input volume's statistics (a half, the sum or the "
        "mean of the halves) or by the even half's from training.",
    )


class N2n(UNetMethod):
    """Noise2Noise between the even and odd halves, both directions, same crops."""

    name = "n2n"
    summary = "Noise2Noise between even/odd half tomograms (train EVEN --odd ODD)."
    inputs = ("even", "odd")
    train_options = N2nTrainOptions
    denoise_options = N2nDenoiseOptions
    log_terms = ("total",)

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """MSE of the network's even→odd and odd→even predictions, one Adam step."""
        e = torch.from_numpy(batch["even"])
        o = torch.from_numpy(batch["odd"])
        x = torch.cat([e, o]).to(state.device, non_blocking=True)
        y = torch.cat([o, e]).to(state.device, non_blocking=True)
        out = self.forward(state, x, train).float()
        loss = torch.mean((out - y) ** 2)
        if train:
            state.update(loss, "model")
        return {"total": loss}
