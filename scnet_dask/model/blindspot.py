"""SC-Net's volumetric blind-spot replacement, as pure functions of a ``torch.Generator``."""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["blind_spot_replace", "BlindSpotMode", "RatioUnit"]

BlindSpotMode = Literal["internal", "cross"]
RatioUnit = Literal["regions", "voxels"]


def _region_offsets(region: int) -> torch.Tensor:
    r = region // 2
    rng = torch.arange(-r, r + 1)
    return torch.stack(torch.meshgrid(rng, rng, rng, indexing="ij"), dim=-1).reshape(-1, 3)


def _ring_offsets(region: int, window: int) -> torch.Tensor:
    """Offsets of the ``window``³ neighbourhood outside the centred ``region``³ block."""
    w = _region_offsets(window)
    inside = (w.abs() <= region // 2).all(dim=1)
    return w[~inside]


def blind_spot_replace(
    noisy: torch.Tensor,
    prior: torch.Tensor | None = None,
    *,
    region: int = 3,
    window: int = 5,
    ratio: float = 0.1,
    mode: BlindSpotMode = "internal",
    generator: torch.Generator | None = None,
    unit: RatioUnit = "regions",
    strict: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace random ``region``³ blocks by values drawn from their ``window``³ neighbourhood.

    As in the public SC-Net code, ``round(ratio * n_voxels)`` region centres are drawn uniformly
    (at least ``window // 2`` voxels from the border); each region is replaced by the region
    shifted by a random non-zero offset in ``[-(window - region) // 2, (window - region) // 2]``
    per axis, so every replacement value comes from within the centre's ``window``³
    neighbourhood. All values are taken from the unmodified input; where regions overlap, the
    later one wins.

    That spot is not blind: a ±1 shift of a 3³ block moves about two thirds of the block's own
    noisy values one voxel over, where the network sees them. ``strict=True`` makes it blind:
    every replaced voxel takes the value of a random voxel of the centre's ``window``³
    neighbourhood **outside** the region, and the returned mask keeps only the replaced voxels
    whose own value was copied nowhere (so a loss on the mask never sees its target in the
    input).

    Parameters
    ----------
    noisy
        (z, y, x) or (batch, 1, z, y, x) patch(es).
    prior
        Same shape; the source of the replacement values in ``mode="cross"``.
    region, window
        Odd edges in voxels, ``window > region``.
    ratio
        Regions per voxel (``unit="regions"``, the public code's ``0.1``) or the fraction of
        voxels to replace (``unit="voxels"``, the paper's "10 % of voxels": ``ratio /
        region³`` regions per voxel; overlaps make the replaced fraction a little smaller).
    mode
        ``"internal"``: values from ``noisy``; ``"cross"``: values from ``prior``.
    generator
        Source of randomness (reproducible with a seed).
    unit
        What ``ratio`` counts (see above).
    strict
        A truly blind spot (see above).

    Returns
    -------
    replaced, mask
        The replaced patch(es) and a float mask (same shape) that is 1 exactly where a voxel
        was replaced (``strict``: replaced, and its value copied nowhere).

    """
    if region < 1 or region % 2 == 0 or window <= region or window % 2 == 0:
        raise ValueError(
            f"region and window must be odd with window > region, got {region}, {window}"
        )
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if mode not in ("internal", "cross"):
        raise ValueError(f"mode must be 'internal' or 'cross', got {mode!r}")
    if unit not in ("regions", "voxels"):
        raise ValueError(f"unit must be 'regions' or 'voxels', got {unit!r}")
    if mode == "cross" and (prior is None or prior.shape != noisy.shape):
        raise ValueError("mode 'cross' needs a prior of the same shape as the noisy patch")
    if noisy.ndim == 5:
        outs = [
            blind_spot_replace(
                noisy[b, 0],
                None if prior is None else prior[b, 0],
                region=region,
                window=window,
                ratio=ratio,
                mode=mode,
                generator=generator,
                unit=unit,
                strict=strict,
            )
            for b in range(noisy.shape[0])
        ]
        return (
            torch.stack([o[0] for o in outs])[:, None],
            torch.stack([o[1] for o in outs])[:, None],
        )
    if noisy.ndim != 3:
        raise ValueError(
            f"expected (z, y, x) or (batch, 1, z, y, x), got shape {tuple(noisy.shape)}"
        )
    source = prior if mode == "cross" and prior is not None else noisy
    dev = noisy.device
    shape = torch.tensor(noisy.shape)
    margin = window // 2
    if bool((shape <= 2 * margin).any()):
        raise ValueError(f"patch {tuple(noisy.shape)} is too small for a {window}³ window")
    per_voxel = ratio / region**3 if unit == "voxels" else ratio
    n = max(1, int(round(per_voxel * noisy.numel())))
    lo = torch.full((3,), margin)
    centres = lo + (torch.rand((n, 3), generator=generator) * (shape - 2 * margin)).long()
    offs = _region_offsets(region)  # (region³, 3)
    dst = (centres[:, None, :] + offs[None]).reshape(-1, 3)
    if strict:  # each voxel from a random voxel of the window outside the region
        ring = _ring_offsets(region, window)
        pick = torch.randint(0, len(ring), (n * len(offs),), generator=generator)
        src = centres.repeat_interleave(len(offs), dim=0) + ring[pick]
    else:
        half = (window - region) // 2
        shifts = torch.randint(-half, half + 1, (n, 3), generator=generator)
        zero = (shifts == 0).all(dim=1)
        while bool(zero.any()):  # a zero shift would not replace anything
            shifts[zero] = torch.randint(-half, half + 1, (int(zero.sum()), 3), generator=generator)
            zero = (shifts == 0).all(dim=1)
        src = (centres[:, None, :] + shifts[:, None, :] + offs[None]).reshape(-1, 3)
    # where regions overlap, keep the last one: unique target voxels, last occurrence
    strides = torch.tensor([noisy.shape[1] * noisy.shape[2], noisy.shape[2], 1])
    lin = (dst * strides).sum(dim=1).flip(0)
    uniq, inv = torch.unique(lin, return_inverse=True)
    order = torch.arange(lin.numel())
    first = torch.full((uniq.numel(),), lin.numel(), dtype=torch.long).scatter_reduce(
        0, inv, order, reduce="amin"
    )
    keep = lin.numel() - 1 - first
    dst, src = dst[keep].to(dev), src[keep].to(dev)
    out = noisy.clone()
    out[dst[:, 0], dst[:, 1], dst[:, 2]] = source[src[:, 0], src[:, 1], src[:, 2]]
    mask = torch.zeros_like(noisy)
    mask[dst[:, 0], dst[:, 1], dst[:, 2]] = 1.0
    if strict and mode == "internal":  # a voxel whose value shows elsewhere is not blind
        mask[src[:, 0], src[:, 1], src[:, 2]] = 0.0
    return out, mask
