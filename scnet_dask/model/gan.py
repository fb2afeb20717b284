"""NMSG's noise model: a fully convolutional 3-D noise generator and its WGAN-GP critic.

The generator maps a white Gaussian field (``latent`` channels) to one channel of noise through
unpadded ("valid") 3-D convolutions, so its output is stationary: no voxel sees a border, and
any (z, y, x) size can be generated (the white field is drawn ``reach`` voxels larger on every
side). A stack of convolutions and leaky ReLUs on white noise can represent any stationary
colouring within its reach (the spectrum: cryo-ET noise is correlated, shaped by the CTF and
the reconstruction) and a non-Gaussian voxel histogram. These choices are ours (NMSG's
authors synthesise 2-D noise images with a transposed-convolution WGAN-GP).

The critic is a small strided 3-D CNN without normalisation layers (WGAN-GP, Gulrajani et al.
2017, advises against batch norm in the critic) ending in a global mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NoiseGenerator", "NoiseCritic", "gradient_penalty", "spectral_loss", "cube_spectrum"]


class NoiseGenerator(nn.Module):
    """White Gaussian field -> correlated noise, stationary, of any size.

    Parameters
    ----------
    features
        Channels of the hidden layers.
    latent
        Channels of the white input field.
    layers
        Convolutions (the first 5³, the others 3³); ``reach = 2 + (layers - 1)`` voxels.

    """

    def __init__(self, features: int = 32, latent: int = 4, layers: int = 4):
        super().__init__()
        if layers < 2:
            raise ValueError(f"the generator needs >= 2 layers, got {layers}")
        mods: list[nn.Module] = [nn.Conv3d(latent, features, 5), nn.LeakyReLU(0.2)]
        for _ in range(layers - 2):
            mods += [nn.Conv3d(features, features, 3), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv3d(features, 1, 3))
        self.net = nn.Sequential(*mods)
        self.latent = latent
        self.reach = 2 + (layers - 1)

    def forward(self, white: torch.Tensor) -> torch.Tensor:
        """(B, latent, z + 2r, y + 2r, x + 2r) white field -> (B, 1, z, y, x) noise."""
        return self.net(white)

    def sample(
        self,
        batch: int,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """(batch, 1, z, y, x) noise, zero mean per sample (the white field drawn on the CPU).

        Each sample's spatial mean is removed, as it was from the real noise cubes; the
        generator is trained on mean-free cubes and so does not model the mean.
        """
        if len(shape) != 3:
            raise ValueError(f"shape must be (z, y, x), got {tuple(shape)}")
        r = self.reach
        white = torch.randn(
            (batch, self.latent) + tuple(s + 2 * r for s in shape), generator=generator
        )
        out = self(white.to(device, non_blocking=True))
        return out - out.mean(dim=(2, 3, 4), keepdim=True)


class NoiseCritic(nn.Module):
    """WGAN critic on (B, 1, c, c, c) noise cubes (c >= 8): a score per cube."""

    def __init__(self, features: int = 32):
        super().__init__()
        f = features
        self.net = nn.Sequential(
            nn.Conv3d(1, f, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(f, 2 * f, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(2 * f, 4 * f, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(4 * f, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, c, c, c) -> (B,) scores."""
        return self.head(self.net(x).mean(dim=(2, 3, 4)))[:, 0]


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's ``E[(||∇D(x̂)|| - 1)²]`` on random interpolates of ``real`` and ``fake``.

    ``real`` and ``fake`` are (B, 1, ...) batches of 2-D images or 3-D cubes.
    """
    eps = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), device=real.device)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def cube_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Mean periodogram ``|rfftn|² / voxels`` of (B, 1, c, c, c) cubes: (c, c, c // 2 + 1)."""
    p = torch.fft.rfftn(x.float(), dim=(2, 3, 4)).abs() ** 2 / float(x[0, 0].numel())
    return p.mean(dim=(0, 1))


def _radial_index(shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, int]:
    """Band of every rfftn bin (``round(|k| * c)``, c the cube edge) and the number of bands."""
    c = shape[0]
    fz = torch.fft.fftfreq(shape[0], device=device)[:, None, None]
    fy = torch.fft.fftfreq(shape[1], device=device)[None, :, None]
    fx = torch.fft.rfftfreq(2 * (shape[2] - 1), device=device)[None, None, :]
    band = torch.round(torch.sqrt(fz**2 + fy**2 + fx**2) * c).long().flatten()
    return band, int(band.max()) + 1


def _radial(p: torch.Tensor) -> torch.Tensor:
    """Mean of a spectrum over each radial band (DC and the corners beyond c/2 included)."""
    band, n = _radial_index(tuple(p.shape), p.device)
    total = torch.zeros(n, device=p.device).index_add_(0, band, p.flatten())
    count = torch.bincount(band, minlength=n).clamp(min=1)
    return total / count


def spectral_loss(fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared log ratio of ``fake``'s power spectrum to ``target`` (:func:`cube_spectrum`).

    Two terms, each the mean over its bins: the 3-D spectrum pooled over 2³ neighbouring
    frequencies (the anisotropy: missing wedge, z elongation; pooling keeps the batch
    estimate's log nearly unbiased) and the radially averaged spectrum (exact frequency bands,
    many bins each). A spectral term beside (or instead of) the adversarial one pins the
    noise's second-order statistics, what matters most for correlated cryo-ET noise, stably.
    """
    pf = cube_spectrum(fake)
    eps = 1e-3 * target.mean()

    def pool(p: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(p[None, None], 2, ceil_mode=True)[0, 0]

    pooled = torch.mean(torch.log((pool(pf) + eps) / (pool(target) + eps)) ** 2)
    radial = torch.mean(torch.log((_radial(pf)[1:] + eps) / (_radial(target)[1:] + eps)) ** 2)
    return pooled + radial
