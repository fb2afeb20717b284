"""SC-Net (Yang, Zhang & Han, ICCV 2021): blind-spot self-supervision plus a smoothed prior.

Training: volumetric blind-spot replacement of the noisy patch, the U-Net's output compared to
the noisy patch on the replaced voxels (L_rec) and to the prior through Sobel gradients
(L_smooth), local means (L_exp) and an L1 gradient regulariser (L_reg). Inference: the network
on blended tiles, then a Gaussian of σ ``post_sigma`` (the paper's 0.5).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from scnet_dask import __version__
from scnet_dask.errors import InputError, OutputError
from scnet_dask.io import open_source
from scnet_dask.methods._unet import BlindSpotOptions, NormaliseOption, UNetMethod
from scnet_dask.methods.base import TrainState
from scnet_dask.model.blindspot import blind_spot_replace
from scnet_dask.model.checkpoint import save_checkpoint
from scnet_dask.model.losses import LossWeights, scnet_losses
from scnet_dask.model.unet import SCNetUNet, load_public_state_dict
from scnet_dask.science.stats import affine_fit, volume_statistics

log = logging.getLogger(__name__)

__all__ = [
    "ScnetTrainOptions",
    "ScnetDenoiseOptions",
    "Scnet",
    "ramp_weight",
    "write_checkpoint",
    "import_public_checkpoint",
]


class ScnetTrainOptions(BlindSpotOptions):
    """Options of ``train --method scnet`` (the network and blind spot come from the base)."""

    prior: Path | None = Field(
        None,
        description="Prior OME-Zarr (from 'scnet-dask prior'), same grid; needed for one "
        "volume (with --dataset the prior is made per tomogram: --prior-sigma).",
    )
    lambda_rec: float = Field(0.6, ge=0, description="Weight of L_rec.")
    lambda_smooth: float = Field(
        0.01, ge=0, description="Weight of L_smooth (Sobel, vs prior); the paper's is 0.1."
    )
    lambda_exp: float = Field(0.2, ge=0, description="Weight of L_exp (local means, vs prior).")
    lambda_reg: float = Field(0.01, ge=0, description="Weight of L_reg (L1 of the gradients).")
    rec_warmup: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="Fraction of all steps on L_rec alone; the prior terms then ramp in "
        "linearly over as many steps (0 = the paper's schedule).",
    )
    rec_variant: Literal["replaced", "unreplaced"] = Field(
        "replaced", description="L_rec on the replaced voxels (paper) or the others (code)."
    )
    blind_spot_mode: Literal["internal", "cross"] = Field(
        "internal", description="Replacement values from the noisy patch or from the prior."
    )
    prior_normalisation: Literal["own", "noisy", "affine"] = Field(
        "affine",
        description="How the prior is scaled for the losses: by its own mean and std, by the "
        "noisy volume's, or affine-fitted to the noisy volume (least squares) and then by the "
        "noisy volume's.",
    )


class ScnetDenoiseOptions(NormaliseOption):
    """Options of ``denoise --method scnet``."""

    post_sigma: float = Field(0.5, ge=0, le=4, description="Gaussian σ (voxels) after the network.")


def ramp_weight(step: int, total_steps: int, warmup: float) -> float:
    """Weight (0..1) of L_smooth, L_exp and L_reg at ``step`` (the ``rec_warmup`` schedule).

    The three prior-driven terms are blind to the output's sign (gradient magnitudes, a mean,
    an L1 norm) and dominate L_rec by an order of magnitude at the paper's λ; from a random
    start they can lock the network into a contrast-inverted solution that L_rec cannot pull it
    out of. Training on L_rec alone first fixes the sign: weight 0 for the first
    ``k = round(warmup * total_steps)`` steps, then a linear ramp to 1 over ``k`` more.
    """
    k = round(warmup * total_steps)
    if k <= 0:
        return 1.0
    return float(min(1.0, max(0.0, (step - k) / k)))


class Scnet(UNetMethod):
    """SC-Net: blind spots, L_rec + prior terms, σ 0.5 post-filter."""

    name = "scnet"
    summary = "SC-Net: blind-spot self-supervision with a smoothed prior (needs --prior)."
    inputs = ("noisy", "prior")
    train_options = ScnetTrainOptions
    denoise_options = ScnetDenoiseOptions
    log_terms = ("total", "rec", "smooth", "exp", "reg", "ramp")
    #: measured (docs/scnet_ablation.md): with a constant rate the last checkpoint's quality
    #: wanders with the number of steps; a cosine decay makes longer training help
    lr_schedule = "cosine"

    def input_statistics(
        self, options: Any, stats: dict[str, dict[str, Any]], arrays: Mapping[str, Any],
        labels: Mapping[str, str],
    ) -> dict[str, dict[str, Any]]:  # fmt: skip
        """The prior's normalisation (``prior_normalisation``); the noisy volume's own.

        The network's output lives in the noisy volume's normalised units. ``"own"`` z-scores
        a smooth prior by its own (smaller) std, which scales its gradients up by
        σ_noisy/σ_prior against that output; ``"noisy"`` uses the noisy volume's mean and std;
        ``"affine"`` fits ``noisy ≈ a * prior + b`` (one Dask pass) and normalises
        ``a * prior + b`` by the noisy volume's statistics, i.e. prior mean, std σ_noisy / a.
        """
        mode = getattr(options, "prior_normalisation", "affine")
        if mode == "own":
            return stats
        noisy = stats["noisy"]
        if mode == "noisy":
            prior = {"mean": noisy["mean"], "std": noisy["std"]}
        else:
            try:
                a, b = affine_fit(arrays["prior"], arrays["noisy"])
            except ValueError:  # a constant prior
                a, b = 0.0, 0.0
            if a > 0:
                prior = {"mean": stats["prior"]["mean"], "std": float(noisy["std"]) / a}
                log.info("prior affine fit to the noisy volume: scale %.4g, offset %.4g", a, b)
            else:
                log.warning(
                    "%s does not correlate positively with %s (fitted scale %.3g): normalising "
                    "the prior by the noisy volume's statistics instead",
                    labels["prior"], labels["noisy"], a,
                )  # fmt: skip
                prior = {"mean": noisy["mean"], "std": noisy["std"]}
        return {**stats, "prior": {**stats["prior"], **prior, "normalisation": mode}}

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Blind-spot replace, forward, the four losses (ramped), one Adam step."""
        o: ScnetTrainOptions = state.options
        dev = state.device  # the blind spot runs where the batch is (no sort; see blindspot.py)
        n = torch.from_numpy(batch["noisy"]).to(dev, non_blocking=True)
        p = torch.from_numpy(batch["prior"]).to(dev, non_blocking=True)
        src, mask = blind_spot_replace(
            n, p, region=o.swap_size, window=o.swap_window, ratio=o.swap_ratio,
            mode=o.blind_spot_mode, generator=generator, unit=o.swap_ratio_unit,
            strict=o.blind_spot_strict,
        )  # fmt: skip
        out = self.forward(state, src, train).float()
        ramp = ramp_weight(state.step, state.total_steps, o.rec_warmup) if train else 1.0
        w = LossWeights(
            rec=o.lambda_rec,
            smooth=ramp * o.lambda_smooth,
            exp=ramp * o.lambda_exp,
            reg=ramp * o.lambda_reg,
        )
        terms = scnet_losses(out, n, p, mask, w, o.rec_variant)
        if train:
            state.update(terms["total"], "model")
        terms["ramp"] = torch.tensor(ramp)
        return terms


def write_checkpoint(
    path: Path, model: SCNetUNet, normalisation: dict[str, Any], provenance: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Write an inference-only SC-Net checkpoint (no optimiser) around ``model``'s weights.

    ``normalisation["noisy"]`` holds the ``mean``, ``std`` and ``voxel_size_angstrom`` that
    ``denoise`` normalises with and checks the input's voxel size against.
    """
    opts = {"features": model.features, "upsample": model.upsample, "prior": "", **(options or {})}
    save_checkpoint(
        path,
        {
            "method": "scnet",
            "options": ScnetTrainOptions(**opts).model_dump(mode="json"),
            "config": {"method": "scnet"},
            "networks": {"model": model.state_dict()},
            "optimizers": {},
            "normalisation": normalisation,
            "epoch": 0,
            "step": 0,
            "best_val": float("nan"),
            "provenance": provenance,
        },
    )


def import_public_checkpoint(
    public: Path, noisy: Path, output: Path, features: int = 32, upsample: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Turn a public SC-Net checkpoint (``netG``) into a scnet-dask checkpoint.

    The public code normalises the tomogram it denoises; the normalisation stored here is the
    noisy volume's (``noisy``, an OME-Zarr or MRC), and so is the voxel size.

    Returns
    -------
    dict
        Output path, features, upsample and the number of tensors loaded.

    Raises
    ------
    InputError
        If the file is unreadable, holds no ``netG`` state dict, or its tensors do not fit a
        U-Net of ``features`` channels.

    """
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: exists; pass --overwrite to replace it")
    try:
        data = torch.load(public, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise InputError(f"{public}: unreadable SC-Net checkpoint ({type(e).__name__})") from e
    state = data.get("netG", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{public}: no 'netG' state dict in this checkpoint")
    model = SCNetUNet(features=features, upsample=upsample)
    try:
        load_public_state_dict(model, state)
    except ValueError as e:
        raise InputError(f"{public}: {e}") from e
    vol = open_source(noisy)
    stats = volume_statistics(vol)
    stats["voxel_size_angstrom"] = list(vol.voxel_size_angstrom)
    provenance = {
        "imported_from": str(Path(public).resolve()),
        "kind": "public SC-Net checkpoint (netG)",
        "noisy": str(Path(noisy).resolve()),
        "scnet_dask_version": __version__,
    }
    write_checkpoint(output, model, {"noisy": _plain(stats)}, provenance, {"prior": str(noisy)})
    return {
        "output": str(output),
        "features": features,
        "upsample": upsample,
        "tensors": len(state),
    }


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in d.items()}
