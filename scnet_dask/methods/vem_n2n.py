"""Self-supervised restoration of one fast-scanned vEM stack: sub-lattice Noise2Noise.

The seed project's scheme (Neighbor2Neighbor / ZS-N2N family, not a blind spot): each training
section is split into two pixel sub-lattices, (even, even) vs (odd, odd) or (even, odd) vs
(odd, even), 50/50. With pixel-independent noise the two half-resolution images see the same
structure with independent noise, so a network trained to predict one from the other (both ways:
the loss is symmetric) learns the noise-free signal. ``denoise`` applies the network at full
resolution; the training/inference scale mismatch is the seed's too (measured in
``benchmarks/quality_vem.py``).

The split is in (y, x) only; z is kept (k neighbouring sections for the 2.5-D network).
Patches must have (y, x) edges of twice the network's multiple (16 for 2.5-D, 32 for 3-D).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from scnet_dask.methods._vem import VemDenoiseOptions, VemMethod, VemNetOptions
from scnet_dask.methods.base import Geometry, PredictContext, TilePredictor, TrainState

__all__ = ["VemN2nTrainOptions", "VemN2nDenoiseOptions", "VemN2n", "LatticePredictor",
           "sublattices"]  # fmt: skip


class VemN2nTrainOptions(VemNetOptions):
    """Options of ``train --method vem-n2n``."""

    lattices: Literal["both", "main", "anti"] = Field(
        "both",
        description="Sub-lattice pairs: main ((0,0) vs (1,1)), anti ((0,1) vs (1,0)) or both, "
        "drawn 50/50 per step (the seed's).",
    )


class VemN2nDenoiseOptions(VemDenoiseOptions):
    """Options of ``denoise --method vem-n2n``."""

    scale: Literal["full", "lattice"] = Field(
        "full",
        description="full: the network on the full-resolution sections (the seed's); lattice: "
        "on each of the four 2x2 pixel sub-lattices, at the scale it was trained on, "
        "interleaved back.",
    )


@dataclass(frozen=True)
class LatticePredictor:
    """A tile predictor applied to the four (y, x) pixel sub-lattices of each tile separately.

    Each sub-lattice (half the pixels along y and x) is what the network saw in training; the
    four predictions are interleaved back into the full-resolution tile.
    """

    inner: Any

    @property
    def geometry(self) -> Geometry:
        """The inner geometry with its (y, x) reach and tile multiple doubled."""
        g = self.inner.geometry
        mz, my, mx = g.margin
        h = g.margin_hi
        hi = None if h is None else (h[0], 2 * h[1], 2 * h[2])
        return replace(g, margin=(mz, 2 * my, 2 * mx), margin_hi=hi, multiple=2 * g.multiple)

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Denoise (B, z, y, x) tiles (even y, x) lattice by lattice; float32."""
        b = tiles.shape[0]
        offsets = ((0, 0), (0, 1), (1, 0), (1, 1))
        parts = np.concatenate([tiles[..., i::2, j::2] for i, j in offsets])
        out = np.empty(tiles.shape, dtype=np.float32)
        pred = self.inner(np.ascontiguousarray(parts))
        for k, (i, j) in enumerate(offsets):
            out[..., i::2, j::2] = pred[k * b : (k + 1) * b]
        return out


def sublattices(x: torch.Tensor, diagonal: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two (y, x) pixel sub-lattices of (batch, 1, z, y, x) patches (even y, x edges).

    ``diagonal``: ``"main"`` gives pixels (0, 0) and (1, 1) of each 2x2 cell, ``"anti"``
    gives (0, 1) and (1, 0). Each output is (batch, 1, z, y/2, x/2).
    """
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"sub-lattices need even (y, x) edges, got {tuple(x.shape[-2:])}")
    if diagonal == "main":
        return x[..., 0::2, 0::2], x[..., 1::2, 1::2]
    if diagonal == "anti":
        return x[..., 0::2, 1::2], x[..., 1::2, 0::2]
    raise ValueError(f"diagonal must be 'main' or 'anti', got {diagonal!r}")


class VemN2n(VemMethod):
    """Sub-lattice Noise2Noise on one stack, symmetric loss."""

    name = "vem-n2n"
    summary = "Self-supervised vEM: sub-lattice Noise2Noise on one fast-scan stack."
    inputs = ("noisy",)
    train_options = VemN2nTrainOptions
    denoise_options = VemN2nDenoiseOptions

    def patch_shape(self, options: Any, patch_size: int) -> tuple[int, int, int]:
        """As the vEM networks; (y, x) edges must halve to the network's multiple."""
        shape = super().patch_shape(options, patch_size)
        need = 32 if options.network == "3d" else 2 * 2**options.depth
        if patch_size % need:
            raise ValueError(
                f"--method vem-n2n with this network needs --patch-size a multiple of {need} "
                f"(sub-lattices are half as wide), got {patch_size}"
            )
        return shape

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """L(f(a), b) + L(f(b), a) over the two sub-lattices a, b; one Adam step."""
        o: VemN2nTrainOptions = state.options
        diagonal = o.lattices
        if diagonal == "both":
            diagonal = "main" if int(torch.randint(2, (1,), generator=generator)) else "anti"
        x = torch.from_numpy(batch["noisy"]).to(state.device, non_blocking=True)
        a, b = sublattices(x, diagonal)
        src = torch.cat([a, b])
        tgt = torch.cat([b, a])
        out = self.run(state, src, train)
        terms = self.loss(o, out, self.centre(o, tgt))
        if train:
            state.update(terms["total"], "model")
        return terms

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """The network at full resolution, or on each sub-lattice (``--scale lattice``)."""
        pred, details = super().predictor(options, ctx)
        if options.scale == "lattice":
            return LatticePredictor(pred), {**details, "scale": "lattice"}
        return pred, {**details, "scale": "full"}
