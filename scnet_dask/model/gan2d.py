"""NMSG's published noise synthesiser: a 2-D WGAN-GP of noise images, stacked into volumes.

The authors' ``synthesizer/`` is the public "pytorch-wgan" code: a DCGAN-style generator of
transposed convolutions from a 100-d latent vector to a square image, and a convolutional critic
trained with the WGAN-GP gradient penalty (Gulrajani et al. 2017). This module builds that
design at the size of our noise cubes' sections (``c x c``, ``c`` a power of two >= 8; the
authors use 128 x 128), with these differences, ours:

- the generator's output is linear (theirs ends in ``tanh`` for images scaled to [-1, 1]; noise
  in units of its standard deviation is unbounded);
- channel widths scale with ``features`` (theirs are fixed at 1024/512/256);
- how the authors turn 2-D noise images into a ``synthetic_noisy`` volume is not published: here
  every z-section of a volume is tiled with independent images (``c x c`` tiles, cropped), so
  the noise is correlated within a tile's plane but independent from section to section and
  across tile borders. The 2-D model cannot know the correlation along z; the diagnostics
  (``RUN/noise_model.json``) measure what that costs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["NoiseGenerator2D", "NoiseCritic2D", "LATENT_2D"]

#: Length of the generator's latent vector (the pytorch-wgan code's 100).
LATENT_2D = 100


def _levels(size: int) -> int:
    """Doublings from 4 x 4 to ``size`` x ``size``; ``size`` a power of two >= 8."""
    if size < 8 or size & (size - 1):
        raise ValueError(f"the 2-D noise model needs a power-of-two image edge >= 8, got {size}")
    return int(math.log2(size)) - 2


class NoiseGenerator2D(nn.Module):
    """Latent vector (100-d) -> ``size`` x ``size`` noise image (DCGAN-style, transposed convs).

    Parameters
    ----------
    size
        Edge of the generated images (a power of two >= 8): the noise cube's edge.
    features
        Channels of the last hidden layer; each earlier layer doubles them.
    latent
        Length of the latent vector.

    """

    def __init__(self, size: int = 16, features: int = 32, latent: int = LATENT_2D):
        super().__init__()
        n = _levels(size)
        width = features * 2 ** (n - 1)
        mods: list[nn.Module] = [
            nn.ConvTranspose2d(latent, width, 4, 1, 0),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            mods += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        mods.append(nn.ConvTranspose2d(width, 1, 4, 2, 1))
        self.net = nn.Sequential(*mods)
        self.size = size
        self.latent = latent

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent, 1, 1) -> (B, 1, size, size)."""
        return self.net(z)

    def images(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """``n`` generated images (n, 1, size, size), the latent drawn on the CPU."""
        z = torch.randn((n, self.latent, 1, 1), generator=generator)
        return self(z.to(device, non_blocking=True))

    def sample(
        self,
        batch: int,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """(batch, 1, z, y, x) noise volumes, section by section; zero mean per volume.

        Every z-section is tiled with ``ceil(y / size) x ceil(x / size)`` independent images,
        cropped to (y, x): the same call as :meth:`scnet_dask.model.gan.NoiseGenerator.sample`.
        """
        if len(shape) != 3:
            raise ValueError(f"shape must be (z, y, x), got {tuple(shape)}")
        z, y, x = (int(s) for s in shape)
        c = self.size
        ty, tx = -(-y // c), -(-x // c)
        img = self.images(batch * z * ty * tx, generator, device)
        vol = img.view(batch, z, ty, tx, c, c).permute(0, 1, 2, 4, 3, 5)
        vol = vol.reshape(batch, 1, z, ty * c, tx * c)[:, :, :, :y, :x]
        return vol - vol.mean(dim=(2, 3, 4), keepdim=True)


class NoiseCritic2D(nn.Module):
    """WGAN-GP critic on (B, 1, size, size) images: strided convolutions to 4 x 4, then a score.

    Instance normalisation, not batch normalisation (WGAN-GP's advice, as pytorch-wgan).
    """

    def __init__(self, size: int = 16, features: int = 32):
        super().__init__()
        n = _levels(size)
        mods: list[nn.Module] = [nn.Conv2d(1, features, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = features
        for _ in range(n - 1):
            mods += [
                nn.Conv2d(width, 2 * width, 4, 2, 1),
                nn.InstanceNorm2d(2 * width, affine=True),
                nn.LeakyReLU(0.2),
            ]
            width *= 2
        mods.append(nn.Conv2d(width, 1, 4, 1, 0))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, size, size) -> (B,) scores."""
        return self.net(x).flatten(1)[:, 0]
