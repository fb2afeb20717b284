"""NMSG's options: training (U-Net, noise bank, GAN phase, pair form) and denoising."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from scnet_dask.methods._unet import (
    UNetOptions,
)
from scnet_dask.methods.base import (
    Options,
)

__all__ = [
    "NmsgTrainOptions",
    "NmsgDenoiseOptions",
]


class NmsgTrainOptions(UNetOptions):
    """Options of ``train --method nmsg``."""

    upsample: bool = Field(
        False, description="SC-Net's 2x nearest up-sampling block along z and x."
    )
    prior: Path | None = Field(
        None, description="Optional prior (OME-Zarr) for the sparsity-guided smoothing term."
    )
    lambda_smooth: float = Field(
        0.01, ge=0, description="Weight of the Sobel term against --prior (needs --prior)."
    )
    pair_form: Literal["noisier2noise", "n2n"] = Field(
        "n2n",
        description="Training pairs: (y + a G, y) with the Noisier2Noise correction, or "
        "(y + G1, y + G2).",
    )
    alpha: float = Field(
        1.0, gt=0, le=2, description="Noisier2Noise: scale of the added generated noise."
    )
    noise: Path | None = Field(
        None, description="Noise-cube store (made there if absent); default RUN/noise.zarr."
    )
    noise_cube: int = Field(16, ge=8, le=64, description="Edge of a noise cube (even).")
    noise_rule: Literal["calibrated", "gcbd"] = Field(
        "calibrated",
        description="Smooth-cube thresholds: --noise-tolerance x the median GCBD scores of the "
        "tested cubes, or GCBD's absolute --noise-mu/--noise-gamma (white noise).",
    )
    noise_tolerance: float = Field(
        1.5, gt=0, description="Calibrated rule: multiple of the median scores allowed."
    )
    noise_mu: float = Field(
        0.1, gt=0, description="GCBD rule: max sub-cube mean deviation, in cube std units."
    )
    noise_gamma: float = Field(
        0.25, gt=0, description="GCBD rule: max relative sub-cube variance deviation."
    )
    noise_max_cubes: int = Field(2000, ge=16, description="Noise cubes to collect at most.")
    noise_min_cubes: int = Field(64, ge=8, description="Fewer passing cubes is an error.")
    noise_screen: float = Field(
        1.0,
        gt=0,
        description="Skip candidate cubes whose coarse-level variance exceeds "
        "(1 + this) x its 25th percentile (structure).",
    )
    gan_steps: int = Field(
        400, ge=1, description="Steps of the noise-model phase (generator updates)."
    )
    gan_batch: int = Field(16, ge=2, description="Noise cubes per critic/generator batch.")
    critic_steps: int = Field(2, ge=1, description="Critic updates per generator update.")
    gan_features: int = Field(32, ge=4, description="Channels of generator and critic.")
    gan_layers: int = Field(4, ge=2, le=8, description="Convolutions of the generator.")
    gan_lr: float = Field(
        1e-3, gt=0, description="Adam learning rate of the noise model (cosine decay to 0)."
    )
    gp_weight: float = Field(10.0, ge=0, description="WGAN-GP gradient-penalty weight.")
    lambda_spectrum: float = Field(
        1.0, ge=0, description="Weight of the generator's spectral term (0: adversarial only)."
    )
    lambda_adversarial: float = Field(
        0.0,
        ge=0,
        description="Weight of the generator's adversarial (WGAN-GP) term; 0 "
        "trains no critic (spectral matching only, the measured best for near-Gaussian noise).",
    )


class NmsgDenoiseOptions(Options):
    """Options of ``denoise --method nmsg``."""

    post_sigma: float = Field(0.0, ge=0, le=4, description="Gaussian σ (voxels) after the network.")
    passes: int = Field(
        4, ge=1, le=64, description="Noisier2Noise: generated-noise draws averaged per tile."
    )
