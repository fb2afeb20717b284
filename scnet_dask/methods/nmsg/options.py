"""NMSG's options: training (U-Net, noise bank, GAN phase, pair form) and denoising."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from scnet_dask.methods._unet import (
    NormaliseOption,
    UNetOptions,
)
from scnet_dask.methods.base import (
    Options,
)

__all__ = [
    "FORM_DEFAULTS",
    "LEGACY_KEYS",
    "NoiseBankOptions",
    "GanOptions",
    "NmsgTrainOptions",
    "NmsgDenoiseOptions",
]


#: Flat option names of earlier versions (checkpoints, the Python API) -> (section, field).
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "noise": ("noise_bank", "path"), "noise_cube": ("noise_bank", "cube"),
    "noise_rule": ("noise_bank", "rule"), "noise_tolerance": ("noise_bank", "tolerance"),
    "noise_mu": ("noise_bank", "mu"), "noise_gamma": ("noise_bank", "gamma"),
    "noise_max_cubes": ("noise_bank", "max_cubes"), "noise_min_cubes": ("noise_bank", "min_cubes"),
    "noise_screen": ("noise_bank", "screen"), "gan_steps": ("gan", "steps"),
    "gan_batch": ("gan", "batch"), "critic_steps": ("gan", "critic_steps"),
    "gan_features": ("gan", "features"), "gan_layers": ("gan", "layers"), "gan_lr": ("gan", "lr"),
    "gp_weight": ("gan", "gp_weight"), "lambda_spectrum": ("gan", "lambda_spectrum"),
    "lambda_adversarial": ("gan", "lambda_adversarial"),
}  # fmt: skip


class NoiseBankOptions(Options):
    """NMSG's noise-cube bank: the YAML section ``noise_bank:`` of ``train --method nmsg``."""

    path: Path | None = Field(
        None, description="Noise-cube store (made there if absent); default RUN/noise.zarr."
    )
    cube: int = Field(16, ge=8, le=64, description="Edge of a noise cube (even).")
    rule: Literal["calibrated", "gcbd"] = Field(
        "calibrated",
        description="Smooth-cube thresholds: tolerance x the median GCBD scores of the "
        "tested cubes, or GCBD's absolute mu/gamma (white noise).",
    )
    tolerance: float = Field(
        1.5, gt=0, description="Calibrated rule: multiple of the median scores allowed."
    )
    mu: float = Field(
        0.1, gt=0, description="GCBD rule: max sub-cube mean deviation, in cube std units."
    )
    gamma: float = Field(
        0.25, gt=0, description="GCBD rule: max relative sub-cube variance deviation."
    )
    max_cubes: int = Field(2000, ge=16, description="Noise cubes to collect at most.")
    min_cubes: int = Field(64, ge=8, description="Fewer passing cubes is an error.")
    screen: float = Field(
        1.0,
        gt=0,
        description="Skip candidate cubes whose coarse-level variance exceeds "
        "(1 + this) x its 25th percentile (structure).",
    )


class GanOptions(Options):
    """NMSG's noise-model phase: the YAML section ``gan:`` of ``train --method nmsg``."""

    steps: int = Field(400, ge=1, description="Steps of the noise-model phase (generator updates).")
    batch: int = Field(16, ge=2, description="Noise cubes per critic/generator batch.")
    critic_steps: int = Field(2, ge=1, description="Critic updates per generator update.")
    features: int = Field(32, ge=4, description="Channels of generator and critic.")
    layers: int = Field(4, ge=2, le=8, description="Convolutions of the generator.")
    lr: float = Field(
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


#: Defaults that depend on ``pair_form``: the authors' ``run.sh`` weights for ``paper``.
FORM_DEFAULTS: dict[str, dict[str, float]] = {
    "paper": {"lambda_smooth": 0.05, "lambda_guide": 0.5},
    "n2n": {"lambda_smooth": 0.01, "lambda_guide": 0.0},
    "noisier2noise": {"lambda_smooth": 0.01, "lambda_guide": 0.0},
}


class NmsgTrainOptions(UNetOptions):
    """Options of ``train --method nmsg``."""

    upsample: bool = Field(
        True,
        description="The 2x nearest up-sampling block, on --upsample-axes (NMSG's public code "
        "up-samples y and x; measured +1.4 dB on rec15 at 2.4x the step time).",
    )
    upsample_axes: Literal["zx", "yx"] = Field(
        "yx",
        description="Axes of the 2x up-sampling block: y and x (NMSG's public code) or z and x "
        "(SC-Net's).",
    )
    prior: Path | None = Field(
        None,
        description="Optional prior (OME-Zarr) for the sparsity-guided Sobel term; without it "
        "the paper form compares with the Gaussian guidance.",
    )
    pair_form: Literal["paper", "noisier2noise", "n2n"] = Field(
        "paper",
        description="Training pairs: the authors' (y + G, y) with guidance terms and the "
        "network applied to y as is; (y + a G, y) with the Noisier2Noise correction; or "
        "(y + G1, y + G2).",
    )
    noise_model: Literal["spectral3d", "wgan2d"] = Field(
        "spectral3d",
        description="Noise synthesiser: our 3-D stationary generator fitted to the cubes' "
        "spectrum, or the authors' 2-D WGAN-GP of noise sections stacked slice by slice.",
    )
    lambda_recon: float = Field(1.0, ge=0, description="Weight of the reconstruction term.")
    lambda_smooth: float | None = Field(
        None,
        ge=0,
        description="Weight of the Sobel term against --prior (paper form: against the "
        "Gaussian guidance without one). Default 0.05 with --pair-form paper (run.sh), else "
        "0.01 (and only with --prior).",
    )
    lambda_guide: float | None = Field(
        None,
        ge=0,
        description="Weight of the term against the Gaussian-filtered noisy patch. Default 0.5 "
        "with --pair-form paper (run.sh), else 0.",
    )
    guide_sigma: float = Field(
        1.0,
        gt=0,
        le=4,
        description="σ (voxels) of the Gaussian guidance (the authors' is unpublished; 1 is "
        "SC-Net's default prior and our benchmark's best oracle σ, 1-1.25).",
    )
    alpha: float = Field(
        1.0, gt=0, le=2, description="Noisier2Noise: scale of the added generated noise."
    )
    noise_bank: NoiseBankOptions = Field(
        default_factory=NoiseBankOptions,
        description="the noise-cube bank: path, cube, rule, tolerance, mu, gamma, max_cubes, "
        "min_cubes, screen",
    )
    gan: GanOptions = Field(
        default_factory=GanOptions,
        description="the noise-model phase: steps, batch, critic_steps, features, layers, lr, "
        "gp_weight, lambda_spectrum, lambda_adversarial",
    )

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        """Fill the pair form's weights; move flat option names of earlier versions."""
        if not isinstance(data, dict):
            return data
        form = str(data.get("pair_form") or cls.model_fields["pair_form"].default)
        missing = {k: v for k, v in FORM_DEFAULTS.get(form, {}).items() if data.get(k) is None}
        if missing:
            data = {**data, **missing}
        if not any(k in LEGACY_KEYS for k in data):
            return data
        data = dict(data)
        for key in [k for k in data if k in LEGACY_KEYS]:
            section, field = LEGACY_KEYS[key]
            given = data.get(section) or {}
            if isinstance(given, BaseModel):
                given = given.model_dump()
            data[section] = {**dict(given), field: data.pop(key)}
        return data


class NmsgDenoiseOptions(NormaliseOption):
    """Options of ``denoise --method nmsg``."""

    post_sigma: float = Field(0.0, ge=0, le=4, description="Gaussian σ (voxels) after the network.")
    passes: int = Field(
        4, ge=1, le=64, description="Noisier2Noise: generated-noise draws averaged per tile."
    )
