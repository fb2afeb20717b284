"""Training losses: SC-Net's, Noise2Void's and the vEM methods' L1 + (1 − SSIM).

SC-Net's are reconstruction, Sobel smoothness, expectancy and the gradient regulariser.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ssim2d",
    "l1_ssim",
    "LossWeights",
    "sobel_gradient",
    "local_means",
    "loss_rec",
    "loss_smooth",
    "loss_exp",
    "loss_reg",
    "scnet_losses",
    "n2v_losses",
]


class LossWeights(BaseModel):
    """λ of the four loss terms (the paper's defaults)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    rec: float = Field(0.6, ge=0)
    smooth: float = Field(0.1, ge=0)
    exp: float = Field(0.2, ge=0)
    reg: float = Field(0.01, ge=0)


def _sobel_kernels(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    ky = kx.t().contiguous()
    # as in the public code: the 2-D (y, x) kernels are repeated along z
    k = torch.stack([kx.expand(3, 3, 3), ky.expand(3, 3, 3)])[:, None]
    return k.to(device=device, dtype=dtype)


def sobel_gradient(x: torch.Tensor) -> torch.Tensor:
    """|G_x ⊗ x| + |G_y ⊗ x| with Sobel kernels repeated along z (valid convolution).

    Parameters
    ----------
    x
        (batch, 1, z, y, x).

    Returns
    -------
    torch.Tensor
        (batch, 1, z - 2, y - 2, x - 2).

    """
    g = F.conv3d(x, _sobel_kernels(x.device, x.dtype))
    return g.abs().sum(dim=1, keepdim=True)


def local_means(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """Means over ``size``³ neighbourhoods (valid), (batch, 1, z-size+1, y-size+1, x-size+1)."""
    return F.avg_pool3d(x, kernel_size=size, stride=1)


def loss_rec(
    output: torch.Tensor,
    noisy: torch.Tensor,
    mask: torch.Tensor,
    variant: Literal["replaced", "unreplaced"] = "replaced",
) -> torch.Tensor:
    """Reconstruction loss against the un-replaced noisy patch.

    ``"replaced"`` (paper, Eq. 2): mean squared error over the replaced voxels,
    ``sum(mask * (output - noisy)**2) / sum(mask)``. ``"unreplaced"`` (public code): mean over
    all voxels of ``((1 - mask) * (output - noisy))**2``.
    """
    err = (output - noisy) ** 2
    if variant == "replaced":
        return (err * mask).sum() / mask.sum().clamp_min(1.0)
    if variant == "unreplaced":
        return (err * (1 - mask)).mean()
    raise ValueError(f"variant must be 'replaced' or 'unreplaced', got {variant!r}")


def loss_smooth(output: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Sparsity/smoothness loss (Eq. 4-5): MSE between the Sobel gradients of output and prior."""
    return F.mse_loss(sobel_gradient(output), sobel_gradient(prior))


def loss_exp(output: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Expectancy loss (Eq. 6-7): squared difference of the means of 5³ local means."""
    return (local_means(output).mean() - local_means(prior).mean()) ** 2


def loss_reg(output: torch.Tensor) -> torch.Tensor:
    """Gradient regulariser: mean L1 norm of the output's Sobel response."""
    return sobel_gradient(output).abs().mean()


def scnet_losses(
    output: torch.Tensor,
    noisy: torch.Tensor,
    prior: torch.Tensor,
    mask: torch.Tensor,
    weights: LossWeights | None = None,
    rec_variant: Literal["replaced", "unreplaced"] = "replaced",
) -> dict[str, torch.Tensor]:
    """All four terms and their weighted sum (key ``"total"``), all (batch, 1, z, y, x) inputs."""
    w = weights or LossWeights()
    terms = {
        "rec": loss_rec(output, noisy, mask, rec_variant),
        "smooth": loss_smooth(output, prior),
        "exp": loss_exp(output, prior),
        "reg": loss_reg(output),
    }
    terms["total"] = (
        w.rec * terms["rec"]
        + w.smooth * terms["smooth"]
        + w.exp * terms["exp"]
        + w.reg * terms["reg"]
    )
    return terms


def n2v_losses(
    output: torch.Tensor, noisy: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Noise2Void: mean squared error on the masked voxels only (key ``"total"`` = ``"rec"``).

    The other SC-Net terms are reported as zeros so that logs have the same columns.
    """
    rec = loss_rec(output, noisy, mask, "replaced")
    zero = torch.zeros((), device=output.device, dtype=output.dtype)
    return {"rec": rec, "smooth": zero, "exp": zero, "reg": zero, "total": rec}


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim2d(
    x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor | float, window: int = 9,
    sigma: float = 1.5,
) -> torch.Tensor:  # fmt: skip
    """Mean SSIM of the 2-D sections of (batch, 1, z, y, x) volumes (Wang et al. 2004).

    Gaussian window of ``window`` pixels (σ 1.5, as ``pytorch_msssim`` and the seed project),
    valid positions only; constants ``(0.01 L)²`` and ``(0.03 L)²`` with ``L = data_range``
    (a number, or one value per batch item, broadcastable to (batch, 1, 1, 1)).
    """
    if x.shape != y.shape or x.ndim != 5:
        raise ValueError(f"expected two (batch, 1, z, y, x) tensors, got {x.shape}, {y.shape}")
    b, c, nz, ny, nx = x.shape
    xs = x.transpose(1, 2).reshape(b * nz, c, ny, nx).float()
    ys = y.transpose(1, 2).reshape(b * nz, c, ny, nx).float()
    rng = torch.as_tensor(data_range, dtype=torch.float32, device=x.device)
    if rng.ndim:
        rng = rng.reshape(b, 1, 1, 1).repeat_interleave(nz, dim=0)
    w = _gaussian_window(window, sigma, x.device)
    mx = F.conv2d(xs, w)
    my = F.conv2d(ys, w)
    sxx = F.conv2d(xs * xs, w) - mx * mx
    syy = F.conv2d(ys * ys, w) - my * my
    sxy = F.conv2d(xs * ys, w) - mx * my
    c1 = (0.01 * rng) ** 2
    c2 = (0.03 * rng) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def l1_ssim(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The seed project's restoration loss, L1 + (1 − SSIM), on (batch, 1, z, y, x).

    SSIM per section, data range = each target's (max − min) (the seed works on [0, 1] images;
    our patches are z-scored). Returns ``(l1, 1 - ssim)``.
    """
    rng = (target.amax(dim=(1, 2, 3, 4)) - target.amin(dim=(1, 2, 3, 4))).detach().clamp_min(1e-6)
    l1 = torch.mean(torch.abs(output.float() - target.float()))
    return l1, 1.0 - ssim2d(output, target, rng)
