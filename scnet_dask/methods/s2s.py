"""Self2Self with dropout, real-space variant for tomograms (Quan et al. 2020; cryo-ET thesis).

Training: each patch is repeated ``masks_per_patch`` times, each copy multiplied by its own
Bernoulli keep-mask (voxels, or ``mask_block``³ blocks, dropped with probability ``mask_p``);
the network (a U-Net with dropout before every decoder convolution) sees the kept voxels and
is scored on the dropped ones only (squared error over their count). Inference: the mean of
``passes`` predictions per tile, each with a fresh mask and the decoder dropout on; the masks
and dropout draw from a seed derived from the tile's position, so the output is deterministic
and ``--resume`` safe. Passes are batched ``pass_batch`` at a time into one forward call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from pydantic import Field

from scnet_dask.methods._dropout import DropoutMethod, mc_dropout
from scnet_dask.methods._unet import NormaliseOption, tile_statistics
from scnet_dask.methods.base import Geometry, Options, PredictContext, TilePredictor, TrainState
from scnet_dask.methods.loading import load_trained
from scnet_dask.methods.runtime import infer
from scnet_dask.model.dropout_unet import DropoutUNet

__all__ = ["S2sTrainOptions", "S2sDenoiseOptions", "S2sPredictor", "S2s", "keep_mask"]


class S2sTrainOptions(Options):
    """Options of ``train --method s2s``."""

    features: int = Field(32, ge=1, description="Channels of every U-Net level (nch_ker).")
    depth: int = Field(3, ge=1, le=5, description="Poolings of the dropout U-Net.")
    dropout: float = Field(0.5, ge=0, lt=1, description="Decoder dropout rate.")
    mask_p: float = Field(0.5, gt=0, lt=1, description="Probability that a voxel is dropped.")
    mask_block: int = Field(
        1, ge=1, description="Edge (voxels) of the dropped blocks; 1 = single voxels."
    )
    masks_per_patch: int = Field(6, ge=1, le=64, description="Masked copies of each patch.")


class S2sDenoiseOptions(NormaliseOption):
    """Options of ``denoise --method s2s``."""

    passes: int = Field(32, ge=1, le=1024, description="Masked dropout passes averaged per tile.")
    pass_batch: int = Field(8, ge=1, le=256, description="Passes per forward call.")


def keep_mask(
    shape: Sequence[int], p_drop: float, block: int, generator: torch.Generator
) -> torch.Tensor:
    """A Bernoulli keep-mask (1 = kept) of ``shape`` (..., z, y, x), float32, on the CPU.

    With ``block > 1`` the draw is made on a grid ``block`` times coarser and repeated, so
    whole ``block``³ cubes are dropped together.
    """
    *lead, z, y, x = (int(s) for s in shape)
    if block <= 1:
        return (torch.rand((*lead, z, y, x), generator=generator) >= p_drop).float()
    coarse = [-(-s // block) for s in (z, y, x)]
    m = (torch.rand((*lead, *coarse), generator=generator) >= p_drop).float()
    for axis in range(-3, 0):
        m = m.repeat_interleave(block, dim=axis)
    return m[..., :z, :y, :x].contiguous()


@dataclass(frozen=True)
class S2sPredictor:
    """Mean of ``passes`` masked dropout predictions per (z, y, x) tile, seeded per tile."""

    checkpoint: str
    sha256: str
    device: str
    amp: bool
    passes: int
    pass_batch: int
    geometry: Geometry
    mean: float | None = None
    std: float | None = None

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Return the denoised tiles (B, z, y, x), float32, in the input's units."""
        tr = load_trained(self.checkpoint, self.sha256, self.device)
        net = cast(DropoutUNet, tr.networks["model"])
        opts = tr.options
        mean, std = tile_statistics(tr, "noisy", self.mean, self.std)
        seeds = list(seeds) if seeds is not None else [0] * len(tiles)
        out = np.empty(tiles.shape, dtype=np.float32)
        with mc_dropout(net, self.device, tiles.size * self.passes):
            for i, tile in enumerate(tiles):
                x = torch.from_numpy((np.asarray(tile, np.float32) - mean) / std)
                gen = torch.Generator().manual_seed(int(seeds[i]))
                torch.manual_seed(int(seeds[i]))  # the dropout draws (all devices)
                acc = np.zeros(x.shape, dtype=np.float64)
                done = 0
                while done < self.passes:
                    n = min(self.pass_batch, self.passes - done)
                    m = keep_mask((n, 1, *x.shape), opts.mask_p, opts.mask_block, gen)
                    acc += infer(net, m * x, self.device, self.amp).sum(axis=0)
                    done += n
                out[i] = (acc / self.passes).astype(np.float32) * std + mean
        return out


class S2s(DropoutMethod):
    """Self2Self with dropout: masked inputs, loss on the dropped voxels, ensemble inference."""

    name = "s2s"
    summary = "Self2Self with dropout: Bernoulli-masked patches, ensemble of dropout passes."
    inputs = ("noisy",)
    train_options = S2sTrainOptions
    denoise_options = S2sDenoiseOptions
    log_terms = ("total",)

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Masked copies in, squared error on the dropped voxels over their count, one step."""
        o: S2sTrainOptions = state.options
        x = torch.from_numpy(batch["noisy"]).repeat(o.masks_per_patch, 1, 1, 1, 1)
        keep = keep_mask(x.shape, o.mask_p, o.mask_block, generator)
        x, keep = x.to(state.device, non_blocking=True), keep.to(state.device, non_blocking=True)
        out = self.forward(state, keep * x, train).float()
        drop = 1.0 - keep
        loss = (drop * (out - x) ** 2).sum() / drop.sum().clamp_min(1.0)
        if train:
            state.update(loss, "model")
        return {"total": loss}

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """An :class:`S2sPredictor` over the checkpoint's network (stochastic, seeded)."""
        tr, net = self.dropout_net(ctx)
        geom = Geometry(margin=net.receptive_margin, multiple=net.multiple, stochastic=True)
        device = ctx.device
        mean, std = self.tile_normalisation(options, ctx, tr)
        pred = S2sPredictor(
            tr.path, ctx.checkpoint_sha256, device, ctx.amp, options.passes, options.pass_batch,
            geom, mean, std,
        )  # fmt: skip
        details = self.details(tr, ctx, device)
        details.update(passes=options.passes)
        return pred, details
