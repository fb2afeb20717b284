"""The 3-D U-Net of the public SC-Net code (``UNet3DEM``), with its 2x up-sampling block.

Layer names match the public code so that its checkpoints load unchanged (after stripping the
``module.`` prefix that ``DataParallel`` adds).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SCNetUNet",
    "TILE_MULTIPLE",
    "NET_REACH",
    "NET_REACH_HI",
    "UPSAMPLE_AXES",
    "upsample_factors",
]

#: Axes the 2x up-sampling block may act on: SC-Net's public code up-samples z and x (axes 0
#: and 2), NMSG's public code y and x (axes 1 and 2).
UPSAMPLE_AXES = ("zx", "yx")


def upsample_factors(upsample: bool, axes: str = "zx") -> tuple[int, int, int]:
    """Factor (z, y, x) of a 2x nearest up-sampling block on ``axes`` (``"zx"`` or ``"yx"``)."""
    if axes not in UPSAMPLE_AXES:
        raise ValueError(f"upsample axes must be one of {UPSAMPLE_AXES}, got {axes!r}")
    if not upsample:
        return (1, 1, 1)
    f = tuple(2 if a in axes else 1 for a in "zyx")
    return (f[0], f[1], f[2])

#: Input edges must be multiples of this (four stride-2 convolutions).
TILE_MULTIPLE = 16
#: Sections of the full-resolution stage computed at once in inference (see
#: :meth:`SCNetUNet._last_stage_in_slabs`). Measured on the CPU (4 features, up-sampling
#: block): 64 sections cost 1.18 s on a 128³ tile (one piece 1.04 s; 16 or 32 sections were
#: ~2.1 s) and 4.8 s on a 208 x 240 x 208 tile (one piece 11.5 s: its large allocations are
#: slow).
SLAB = 64
#: Farthest reach (voxels at the network's own resolution) of one input voxel on the output, and
#: of the output on the input: the four stride-2 encoders, the decoder's 3x3x3 convolutions at
#: 1/4 resolution and the nearest up-sampling. Measured by an impulse probe (tests/test_tiling.py)
#: on tiles aligned to 16: 33 voxels on one side, 48 on the other.
NET_REACH = 48
#: The two sides: an output voxel depends on inputs up to :data:`NET_REACH` voxels *below* it
#: and up to ``NET_REACH_HI`` voxels *above* it (so a tile needs 48 voxels of margin at its low
#: end and 33 at its high end).
NET_REACH_HI = 33


def _down(cin: int, cout: int, bn: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, kernel_size=3, stride=2, padding=1)]
    if bn:
        layers.append(nn.BatchNorm3d(cout))
    layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


def _double(cin: int, cmid: int, cout: int, last_plain: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv3d(cin, cmid, kernel_size=3, padding=1),
        nn.BatchNorm3d(cmid),
        nn.LeakyReLU(0.1),
        nn.Conv3d(cmid, cout, kernel_size=3, padding=1),
    ]
    if not last_plain:
        layers += [nn.BatchNorm3d(cout), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class SCNetUNet(nn.Module):
    """SC-Net's ``UNet3DEM``: four stride-2 encoders, nearest-upsampling decoder with skips.

    Parameters
    ----------
    features
        Channels of every encoder level (the public code's ``nch_ker``; default 32).
    upsample
        Apply a 2x nearest up-sampling before the network and the matching 2x average
        down-sampling after it (SC-Net's and NMSG's public code do this to the whole volume).
    upsample_axes
        The axes of that block: ``"zx"`` (SC-Net's public code, the default) or ``"yx"``
        (NMSG's public code).

    Notes
    -----
    Input and output are (batch, 1, z, y, x); spatial edges must be multiples of 16.

    """

    def __init__(self, features: int = 32, upsample: bool = True, upsample_axes: str = "zx"):
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        f = features
        self.features = features
        self.upsample = upsample
        self.upsample_axes = upsample_axes
        self._factors = upsample_factors(upsample, upsample_axes)
        self.enc1_1 = _down(1, f)
        self.enc2_1 = _down(f, f)
        self.enc3_1 = _down(f, f)
        self.enc4_1 = _down(f, f, bn=False)
        self.dec3_1 = _double(2 * f, 2 * f, 2 * f)
        self.dec2_1 = _double(3 * f, 2 * f, 2 * f)
        self.dec1_1 = _double(2 * f + 1, f, 1, last_plain=True)

    @property
    def upsample_factors(self) -> tuple[int, int, int]:
        """Up-sampling factor of the model's input per axis (z, y, x)."""
        return self._factors

    @property
    def receptive_margin(self) -> tuple[int, int, int]:
        """Reach of the receptive field in input voxels per axis (z, y, x).

        :data:`NET_REACH` divided by the up-sampling factor, rounded up: with the 2x block the
        network sees twice as far along the axis it does not up-sample.
        """
        r = tuple(-(-NET_REACH // f) for f in self.upsample_factors)
        return (r[0], r[1], r[2])

    @property
    def receptive_margin_hi(self) -> tuple[int, int, int]:
        """Reach towards higher indices in input voxels (z, y, x): what a tile's high end needs.

        :attr:`receptive_margin` is the reach towards lower indices (the larger one).
        """
        r = tuple(-(-NET_REACH_HI // f) for f in self.upsample_factors)
        return (r[0], r[1], r[2])

    @property
    def forward_memory(self) -> tuple[float, float, float]:
        """Peak memory of a float32 inference forward: bytes per voxel, per plane, fixed.

        A tile of ``(z, y, x)`` input voxels needs about ``z y x * per_voxel + y x * per_plane
        + fixed`` bytes. The encoder holds ~``f / 2`` channels per input voxel at its peak; the
        full-resolution stage runs in slabs of :data:`SLAB` sections (+4 of overlap) holding
        ~``4 f + 4`` channels per (y, x) plane. Coefficients fitted above the measured peak RSS
        of CPU forwards (64³–128³ tiles, 4 to 32 features, with and without the up-sampling
        block: measured / estimated 0.34–0.88; ``tests/test_tilesize.py`` checks three cases).
        Before the slabbed stage the paper's network needed ~1.1 KB per network voxel.
        """
        uz, uy, ux = self.upsample_factors
        f = self.features
        per_voxel = 4.0 * (0.6 * f + 16) * uz * uy * ux
        per_plane = 4.0 * (SLAB + 4) * (4 * f + 4) * uy * ux
        return per_voxel, per_plane, 224.0 * 2**20

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        enc1 = self.enc1_1(x)
        enc2 = self.enc2_1(enc1)
        enc3 = self.enc3_1(enc2)
        enc4 = self.enc4_1(enc3)
        # as in the public code: both decoder stages work at the resolution of enc2
        up3 = F.interpolate(enc4, size=enc2.shape[2:], mode="nearest")
        dec3 = self.dec3_1(torch.cat([up3, enc2], dim=1))
        dec2 = self.dec2_1(torch.cat([dec3, enc2], dim=1))
        del enc1, enc2, enc3, enc4, up3, dec3
        if not (self.training or torch.is_grad_enabled()) and x.shape[2] > SLAB:
            return self._last_stage_in_slabs(dec2, x)
        up1 = F.interpolate(dec2, size=x.shape[2:], mode="nearest")
        return self.dec1_1(torch.cat([up1, x], dim=1))

    def _last_stage_in_slabs(self, dec2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The full-resolution stage (``dec1_1`` on [up-sampled dec2, input]) in z-slabs.

        Eval mode only (BatchNorm then applies stored statistics, pointwise). The same
        arithmetic as the one-piece stage (its two 3³ convolutions reach 2 sections; each slab
        takes 2 more on each side, the rows past the tile's ends are the zeros of the
        convolutions' padding), without holding ``2 f + 1`` full-resolution channels for the
        whole tile: that stage is most of a forward's memory. Inference only (no autograd).
        """
        conv1, conv2 = cast(nn.Conv3d, self.dec1_1[0]), cast(nn.Conv3d, self.dec1_1[3])
        bn, act = cast(nn.BatchNorm3d, self.dec1_1[1]), cast(nn.LeakyReLU, self.dec1_1[2])
        zdim, (fy, fx) = x.shape[2], (x.shape[3] // dec2.shape[3], x.shape[4] // dec2.shape[4])
        fz = zdim // dec2.shape[2]
        out = x.new_empty((x.shape[0], 1, *x.shape[2:]))
        for z0 in range(0, zdim, SLAB):
            z1 = min(z0 + SLAB, zdim)
            a, b = max(0, z0 - 2), min(zdim, z1 + 2)
            rows = torch.arange(a, b, device=x.device) // fz
            up = dec2.index_select(2, rows).repeat_interleave(fy, 3).repeat_interleave(fx, 4)
            cat = torch.cat([up, x[:, :, a:b]], dim=1)
            del up
            if a > z0 - 2 or b < z1 + 2:  # zeros past the tile's ends (the convolution's padding)
                cat = F.pad(cat, (0, 0, 0, 0, a - (z0 - 2), (z1 + 2) - b))
            h = F.conv3d(cat, conv1.weight, conv1.bias, padding=(0, 1, 1))
            del cat
            h = bn(h)
            F.leaky_relu(h, act.negative_slope, inplace=True)
            # rows of h outside the tile are the zero padding of the second convolution
            lo, hi = max(0, -(z0 - 1)), h.shape[2] - max(0, (z1 + 1) - zdim)
            if lo or hi < h.shape[2]:
                h[:, :, :lo] = 0
                h[:, :, hi:] = 0
            out[:, :, z0:z1] = F.conv3d(h, conv2.weight, conv2.bias, padding=(0, 1, 1))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise a batch of (batch, 1, z, y, x) patches; returns the same shape."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"expected input of shape (batch, 1, z, y, x), got {tuple(x.shape)}")
        bad = [int(s) for s in x.shape[2:] if s % TILE_MULTIPLE]
        if bad:
            raise ValueError(
                f"patch edges must be multiples of {TILE_MULTIPLE}, got {tuple(x.shape[2:])}"
            )
        if not self.upsample:
            return self._net(x)
        f = self._factors
        up = F.interpolate(x, scale_factor=tuple(float(v) for v in f), mode="nearest")
        return F.avg_pool3d(self._net(up), kernel_size=f)


def load_public_state_dict(model: SCNetUNet, state: dict[str, torch.Tensor]) -> None:
    """Load a public SC-Net ``netG`` state dict (``module.`` prefixes allowed) into ``model``.

    Raises
    ------
    ValueError
        If the keys or shapes do not match (e.g. a different ``nch_ker``).

    """
    clean = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(clean))
    unexpected = sorted(set(clean) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"state dict does not match SC-Net's UNet3DEM: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    for k, v in clean.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(
                f"state dict tensor {k} has shape {tuple(v.shape)}, the model expects "
                f"{tuple(own[k].shape)} (features={model.features})"
            )
    model.load_state_dict(clean)
