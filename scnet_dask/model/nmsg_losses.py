"""NMSG's three-term training loss, as the authors' public code computes it (``loss.py``).

``recon · L(f(x̃), y) + smooth · L(∇f(x̃), ∇s) + guide · L(f(x̃), g)``, L the mean squared
error, ∇ SC-Net's Sobel magnitude (:func:`scnet_dask.model.losses.sobel_gradient`: ``|G_x| +
|G_y|`` with the 2-D kernels repeated along z, valid), ``s`` the sparsity guidance (SC-Net's
prior) and ``g`` the "filtered guidance": the noisy volume through a 3-D Gaussian filter.

The guidance is made here from the noisy patch itself by a *valid* Gaussian convolution (the
kernel truncated at 4 σ, as scipy's), so that it equals the whole-volume filter exactly; the
output is compared with it on the patch's interior (the patch less the kernel radius).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from scnet_dask.model.losses import loss_smooth

__all__ = ["NmsgWeights", "guide_radius", "gaussian_valid", "crop", "nmsg_losses"]

#: Truncation of the Gaussian guidance kernel, in σ (scipy's default).
TRUNCATE = 4.0


class NmsgWeights(BaseModel):
    """Weights of NMSG's three terms; the defaults are the authors' ``run.sh``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    recon: float = Field(1.0, ge=0)
    smooth: float = Field(0.05, ge=0)
    guide: float = Field(0.5, ge=0)


def guide_radius(sigma: float) -> int:
    """Radius (voxels) of the truncated Gaussian kernel of ``sigma`` voxels (scipy's rule)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return int(TRUNCATE * sigma + 0.5)


def gaussian_valid(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """3-D Gaussian filter of σ voxels, valid part only (separable, kernel summing to 1).

    Parameters
    ----------
    x
        (batch, 1, z, y, x), each edge > 2 x the kernel radius.
    sigma
        Standard deviation in voxels (the same on every axis).

    Returns
    -------
    torch.Tensor
        (batch, 1, z - 2r, y - 2r, x - 2r), r = :func:`guide_radius`; equal to
        ``scipy.ndimage.gaussian_filter(x, sigma)`` away from the edges.

    """
    r = guide_radius(sigma)
    if min(x.shape[2:]) <= 2 * r:
        raise ValueError(f"patch edges must exceed 2 x {r} voxels, got {tuple(x.shape[2:])}")
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(device=x.device, dtype=x.dtype)
    out = x
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = 2 * r + 1
        out = F.conv3d(out, k.view(shape))
    return out


def crop(x: torch.Tensor, r: int) -> torch.Tensor:
    """(batch, c, z, y, x) less ``r`` voxels on every side of every spatial axis."""
    if r == 0:
        return x
    return x[:, :, r:-r, r:-r, r:-r]


def nmsg_losses(
    output: torch.Tensor,
    target: torch.Tensor,
    guide: torch.Tensor,
    sparsity: torch.Tensor | None,
    weights: NmsgWeights | None = None,
) -> dict[str, torch.Tensor]:
    """NMSG's three terms and their weighted sum (``"total"``).

    Parameters
    ----------
    output
        f(x̃), (batch, 1, z, y, x).
    target
        y, the same shape (the un-noised patch in the authors' pairs).
    guide
        g, the Gaussian guidance of the patch's interior: (batch, 1, z - 2r, y - 2r, x - 2r)
        for some r >= 0 (:func:`gaussian_valid`); ``output`` is cropped to it.
    sparsity
        s, the sparsity guidance on ``output``'s grid, or ``None``: the Sobel term then compares
        with ``g`` on the interior (SC-Net's default prior is that same Gaussian filter).
    weights
        recon, smooth, guide (default: the authors' 1.0, 0.05, 0.5).

    """
    w = weights or NmsgWeights()
    r2 = output.shape[2] - guide.shape[2]
    if guide.ndim != 5 or r2 < 0 or r2 % 2 or any(
        o - g != r2 for o, g in zip(output.shape[2:], guide.shape[2:], strict=True)
    ):
        raise ValueError(
            f"guide must be output less 2r on every axis, got {tuple(guide.shape)} for "
            f"{tuple(output.shape)}"
        )
    inner = crop(output, r2 // 2)
    terms = {
        "recon": torch.mean((output - target) ** 2),
        "smooth": (
            loss_smooth(output, sparsity) if sparsity is not None else loss_smooth(inner, guide)
        ),
        "guide": torch.mean((inner - guide) ** 2),
    }
    terms["total"] = (
        w.recon * terms["recon"] + w.smooth * terms["smooth"] + w.guide * terms["guide"]
    )
    return terms
