"""A 3-D U-Net with element-wise dropout before every decoder convolution (Self2Self style).

The network of the cryo-ET Self2Self / Fourier-sampling thesis (``Denoising_3DUNet``), reduced
to ``depth`` poolings so that its reach stays affordable on blended tiles: max-pooling encoder
with one 3³ convolution per level, nearest up-sampling decoder with skips and two 3³
convolutions per level, the raw input concatenated before the last two convolutions, no output
activation. Dropout (``nn.functional.dropout``, element-wise) sits before every decoder
convolution; with ``mc_dropout`` it stays on in eval mode, for ensembles of passes at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DropoutUNet"]


def _conv(cin: int, cout: int) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, padding=1)


class DropoutUNet(nn.Module):
    """U-Net with decoder dropout; input and output (batch, 1, z, y, x).

    Parameters
    ----------
    features
        Channels at every level.
    depth
        Number of 2x poolings; edges must be multiples of ``2**depth``.
    dropout
        Element-wise dropout rate before every decoder convolution.

    """

    def __init__(self, features: int = 32, depth: int = 3, dropout: float = 0.5):
        super().__init__()
        if features < 1 or depth < 1 or not 0 <= dropout < 1:
            raise ValueError(
                f"need features >= 1, depth >= 1, 0 <= dropout < 1, got {features}, {depth}, "
                f"{dropout}"
            )
        f = features
        self.features, self.depth, self.dropout = features, depth, dropout
        self.mc_dropout = False
        self.enc = nn.ModuleList([_conv(1, f)] + [_conv(f, f) for _ in range(depth)])
        self.dec1 = nn.ModuleList([_conv(2 * f, 2 * f) for _ in range(depth)])
        self.dec2 = nn.ModuleList([_conv(2 * f, f) for _ in range(depth)])
        self.out1 = _conv(f + 1, f)
        self.out2 = _conv(f, 1)

    @property
    def multiple(self) -> int:
        """Tile edges must be multiples of this."""
        return int(2**self.depth)

    @property
    def receptive_margin(self) -> tuple[int, int, int]:
        """Reach (voxels) of one input voxel on the output, per axis: ``5 * 2**depth - 2``.

        Measured by an impulse probe at every phase of the pooling grid (18 for depth 2, 38
        for depth 3; ``tests/test_noise2noise.py`` checks it).
        """
        r = 5 * 2**self.depth - 2
        return (r, r, r)

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, training=self.training or self.mc_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise (batch, 1, z, y, x); edges must be multiples of :attr:`multiple`."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"expected input of shape (batch, 1, z, y, x), got {tuple(x.shape)}")
        if any(int(s) % self.multiple for s in x.shape[2:]):
            raise ValueError(
                f"patch edges must be multiples of {self.multiple}, got {tuple(x.shape[2:])}"
            )
        skips = []
        h = x
        for level, conv in enumerate(self.enc):
            if level:
                h = F.max_pool3d(h, 2)
            h = F.leaky_relu(conv(h), 0.1)
            skips.append(h)
        for level in range(self.depth - 1, -1, -1):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = torch.cat([h, skips[level]], dim=1)
            h = F.leaky_relu(self.dec1[level](self._drop(h)), 0.1)
            h = F.leaky_relu(self.dec2[level](self._drop(h)), 0.1)
        h = torch.cat([h, x], dim=1)
        h = F.leaky_relu(self.out1(self._drop(h)), 0.1)
        return self.out2(self._drop(h))
