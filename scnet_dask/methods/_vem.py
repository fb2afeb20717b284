"""Pieces shared by the volume-EM methods (``supervised``, ``vem-n2n``): network and loss.

The network is the 2.5-D :class:`~scnet_dask.model.slice_unet.SliceUNet` (k sections in, the
centre section out) or, as an option, SC-Net's 3-D U-Net without its up-sampling block. The
loss is the seed project's L1 + (1 − SSIM), SSIM per section, or L1 or MSE alone.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from scnet_dask.methods._unet import UNetMethod
from scnet_dask.methods.base import Options, TrainState
from scnet_dask.model.losses import l1_ssim
from scnet_dask.model.slice_unet import SliceUNet
from scnet_dask.model.unet import SCNetUNet

__all__ = ["VemNetOptions", "VemDenoiseOptions", "VemMethod"]


class VemNetOptions(Options):
    """The network and loss of the vEM methods."""

    network: Literal["2.5d", "3d"] = Field(
        "2.5d",
        description="2.5d: k sections in, centre section out (2-D U-Net); 3d: SC-Net's 3-D "
        "U-Net (no up-sampling block).",
    )
    slices: int = Field(5, ge=1, le=15, description="2.5d: sections seen (odd).")
    depth: int = Field(3, ge=1, le=5, description="2.5d: pooling levels of the 2-D U-Net.")
    features: int = Field(32, ge=1, description="Channels of the first U-Net level.")
    patch_depth: int = Field(16, ge=16, description="3d: patch depth in sections (multiple of 16).")
    loss: Literal["l1+ssim", "l1", "mse"] = Field(
        "l1+ssim", description="Loss: L1 + (1 - SSIM per section) (the seed's), L1 or MSE."
    )

    @field_validator("slices")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"slices must be odd (a centre section and k//2 each side), got {v}")
        return v

    @model_validator(mode="after")
    def _depth16(self) -> VemNetOptions:
        if self.patch_depth % 16:
            raise ValueError(f"patch_depth must be a multiple of 16, got {self.patch_depth}")
        return self


class VemDenoiseOptions(Options):
    """Options of ``denoise`` for the vEM methods."""

    post_sigma: float = Field(0.0, ge=0, le=4, description="Gaussian σ (voxels) after the network.")


class VemMethod(UNetMethod):
    """Base of the vEM methods: builds the network, shapes patches, computes the loss."""

    log_terms = ("total", "l1", "ssim")

    def build(self, options: Any) -> dict[str, torch.nn.Module]:
        """``model``: the 2.5-D slice U-Net, or SC-Net's 3-D U-Net without up-sampling."""
        if options.network == "3d":
            return {"model": SCNetUNet(features=options.features, upsample=False)}
        return {"model": SliceUNet(options.slices, options.features, options.depth)}

    def patch_shape(self, options: Any, patch_size: int) -> tuple[int, int, int]:
        """(slices, p, p) for 2.5-D, (patch_depth, p, p) for 3-D."""
        depth = options.slices if options.network == "2.5d" else options.patch_depth
        return (depth, patch_size, patch_size)

    def run(self, state: TrainState, x: torch.Tensor, train: bool) -> torch.Tensor:
        """The network on a (B, 1, z, y, x) batch, bf16 autocast on CUDA.

        Returns the centre section (B, 1, 1, y, x) for 2.5-D, the whole patch for 3-D.
        """
        dev = state.device
        net = state.forward["model"] if train else state.networks["model"]
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            if state.options.network == "2.5d":
                return net(x, centre_only=True).float()
            return net(x).float()

    def centre(self, options: Any, t: torch.Tensor) -> torch.Tensor:
        """What the network's output is compared with: the centre section for 2.5-D."""
        if options.network == "2.5d":
            mid = t.shape[2] // 2
            return t[:, :, mid : mid + 1]
        return t

    def loss(
        self, options: Any, out: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``total`` by ``options.loss``, and both terms (L1, 1 − SSIM) for the log."""
        l1, dssim = l1_ssim(out, target)
        if options.loss == "l1+ssim":
            total = l1 + dssim
        elif options.loss == "l1":
            total = l1
        else:
            total = torch.mean((out - target) ** 2)
        return {"total": total, "l1": l1.detach(), "ssim": dssim.detach()}
