"""A 2.5-D U-Net for volume EM: k neighbouring sections in, the centre section out.

Serial-section and block-face EM stacks are strongly anisotropic (sections 5-15x thicker than
the pixel) and neighbouring sections are not always perfectly aligned, so a 3-D U-Net wastes
capacity on an axis that carries little shared structure. The seed project (OptimizedAcquisition-
4vEM) uses a video-restoration network (Shift-Net) that treats sections as frames; we use the
simplest network of that family: the k sections are the channels of a 2-D U-Net that predicts
a residual on the centre section. It is small, fast on a CPU, exact on tiles (its reach is
known: ``k // 2`` sections in z, :data:`REACH_2D` pixels in y and x) and any stack depth works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SliceUNet", "slice_reach", "SECTIONS_PER_PASS"]

#: Sections denoised per 2-D pass of an inference forward (bounds its memory).
SECTIONS_PER_PASS = 16


def slice_reach(depth: int) -> int:
    """Upper bound of the (y, x) reach in pixels of a :class:`SliceUNet` of ``depth`` levels.

    Two 3x3 convolutions per level on the way down and up (2·2^l each), 2x2 max-pooling and
    nearest up-sampling (2^l each) at levels l < depth, two 3x3 convolutions at the bottom:
    ``6 (2^depth - 1) + 2^(depth + 1)``.
    """
    return 6 * (2**depth - 1) + 2 ** (depth + 1)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.LeakyReLU(0.1),
    )


class SliceUNet(nn.Module):
    """2.5-D U-Net: (batch, 1, z, y, x) → (batch, 1, z, y, x), one section at a time.

    Output section ``i`` is the input section ``i`` plus a residual predicted by a 2-D U-Net
    from sections ``i - k//2 .. i + k//2`` (as channels; reflected at the stack's ends).

    Parameters
    ----------
    slices
        k, the odd number of neighbouring sections seen.
    features
        Channels of the first level (doubled at each level down).
    depth
        Max-pooling levels; (y, x) edges must be multiples of ``2**depth``.

    """

    def __init__(self, slices: int = 5, features: int = 32, depth: int = 3):
        super().__init__()
        if slices < 1 or slices % 2 == 0:
            raise ValueError(f"slices must be odd and >= 1, got {slices}")
        if features < 1 or depth < 1:
            raise ValueError(f"features and depth must be >= 1, got {features}, {depth}")
        self.slices = slices
        self.features = features
        self.depth = depth
        chans = [features * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = slices
        for c in chans[:-1]:
            self.down.append(_block(cin, c))
            cin = c
        self.bottom = _block(chans[-2], chans[-1])
        self.up = nn.ModuleList(
            _block(chans[lv + 1] + chans[lv], chans[lv]) for lv in reversed(range(depth))
        )
        self.head = nn.Conv2d(chans[0], 1, 1)
        with torch.no_grad():  # start as the identity: the residual is 0
            self.head.weight.zero_()
            self.head.bias.zero_()  # type: ignore[union-attr]

    @property
    def tile_multiple(self) -> int:
        """(y, x) edges must be multiples of this."""
        return 2**self.depth

    @property
    def receptive_margin(self) -> tuple[int, int, int]:
        """Reach in input voxels per axis (z, y, x)."""
        r = slice_reach(self.depth)
        return (self.slices // 2, r, r)

    @property
    def forward_memory(self) -> tuple[float, float, float]:
        """Peak memory of a float32 inference forward: bytes per voxel, per plane, fixed.

        A tile of ``(z, y, x)`` input voxels needs about ``z y x * per_voxel + y x * per_plane
        + fixed`` bytes: the tile's k-section stacks (k + 4 floats per voxel with the padded
        copy and the output) and one pass of :data:`SECTIONS_PER_PASS` sections through the
        2-D U-Net (~11.5 f floats per pixel and section, most of it at full resolution).
        Fitted above the measured peak RSS of CPU forwards (4 to 32 features, k 1 to 5, 256² to
        512² sections, 32 to 128 of them: measured / estimated 0.71-0.88;
        ``tests/test_tilesize.py`` checks two cases).
        """
        per_voxel = 4.0 * (self.slices + 4)
        per_plane = 4.0 * SECTIONS_PER_PASS * 11.5 * self.features
        return per_voxel, per_plane, 128.0 * 2**20

    @property
    def upsample_factors(self) -> tuple[int, int, int]:
        """No up-sampling."""
        return (1, 1, 1)

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """(n, k, y, x) stacks of k sections → (n, 1, y, x) denoised centre sections."""
        if x.ndim != 4 or x.shape[1] != self.slices:
            raise ValueError(
                f"expected (n, {self.slices}, y, x) section stacks, got {tuple(x.shape)}"
            )
        bad = [int(s) for s in x.shape[2:] if s % self.tile_multiple]
        if bad:
            raise ValueError(
                f"section edges must be multiples of {self.tile_multiple}, got {tuple(x.shape[2:])}"
            )
        skips = []
        h = x
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.bottom(h)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1))
        mid = self.slices // 2
        return x[:, mid : mid + 1] + self.head(h)

    def forward(
        self,
        x: torch.Tensor,
        centre_only: bool = False,
        sections_per_pass: int = SECTIONS_PER_PASS,
    ) -> torch.Tensor:
        """Denoise every section of (batch, 1, z, y, x); returns the same shape.

        With ``centre_only`` (training), ``z`` must be k and only the centre section is
        returned, (batch, 1, 1, y, x). Sections are processed ``sections_per_pass`` at a time
        to bound memory.
        """
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"expected input of shape (batch, 1, z, y, x), got {tuple(x.shape)}")
        if centre_only:
            return self.centre(x[:, 0])[:, :, None]
        b, _, nz, ny, nx = x.shape
        h = self.slices // 2
        v = x[:, 0]
        if h:  # reflect at the stack's ends (mirror about the first/last section)
            idx = torch.arange(-h, nz + h, device=x.device).abs()
            if nz > 1:
                idx = torch.remainder(idx, 2 * (nz - 1))
                idx = torch.where(idx >= nz, 2 * (nz - 1) - idx, idx)
            v = v[:, idx.clamp(0, nz - 1)]
        stacks = v.unfold(1, self.slices, 1)  # (b, nz, y, x, k)
        stacks = stacks.permute(0, 1, 4, 2, 3).reshape(b * nz, self.slices, ny, nx)
        n = sections_per_pass
        out = torch.cat([self.centre(stacks[i : i + n]) for i in range(0, b * nz, n)])
        return out.reshape(b, nz, ny, nx)[:, None]
