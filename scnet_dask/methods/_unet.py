"""Pieces shared by the methods that train SC-Net's 3-D U-Net with blind spots (scnet, n2v)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import torch
from pydantic import Field

from scnet_dask.errors import InputError
from scnet_dask.io import voxel_mismatch
from scnet_dask.methods.base import Geometry, Method, Options, PredictContext, TilePredictor
from scnet_dask.methods.loading import load_trained
from scnet_dask.methods.runtime import forward_normalised
from scnet_dask.model.unet import TILE_MULTIPLE, SCNetUNet
from scnet_dask.science.stats import volume_statistics

#: How far a volume's std (ratio) or mean (in training stds) may be from the training data's
#: before :func:`warn_if_unlike_training` speaks.
UNLIKE_FACTOR = 3.0

__all__ = [
    "UNetOptions",
    "NormaliseOption",
    "BlindSpotOptions",
    "NetworkPredictor",
    "UNetMethod",
    "network_predictor",
    "network_geometry",
    "unet_of",
]

log = logging.getLogger(__name__)

#: Relative voxel-size difference above which a checkpoint is refused for an input.
VOXEL_TOLERANCE = 0.05


class UNetOptions(Options):
    """The network: SC-Net's ``UNet3DEM``."""

    features: int = Field(32, ge=1, description="Channels of every U-Net level (nch_ker).")
    upsample: bool = Field(
        True, description="SC-Net's 2x nearest up-sampling block (axes: --upsample-axes)."
    )
    upsample_axes: Literal["zx", "yx"] = Field(
        "zx",
        description="Axes of the 2x up-sampling block: z and x (SC-Net's public code) or y "
        "and x (NMSG's public code).",
    )


class NormaliseOption(Options):
    """``normalise``: which statistics tiles are normalised with at prediction."""

    normalise: Literal["input", "checkpoint"] = Field(
        "checkpoint",
        description="Normalise tiles by the training data's statistics stored in the "
        "checkpoint, or by the input volume's own (for a volume in other units).",
    )


class BlindSpotOptions(UNetOptions):
    """Blind-spot replacement (see :func:`scnet_dask.model.blindspot.blind_spot_replace`)."""

    swap_size: int = Field(3, ge=1, description="Blind-spot region edge in voxels (odd).")
    swap_window: int = Field(
        5, ge=3, description="Window (voxels, odd) the replacement values come from."
    )
    swap_ratio: float = Field(
        0.1,
        gt=0,
        le=1,
        description="Blind-spot regions per voxel, or the fraction of voxels "
        "replaced (see --swap-ratio-unit).",
    )
    swap_ratio_unit: Literal["regions", "voxels"] = Field(
        "regions",
        description="What --swap-ratio counts: regions per voxel (the public code) "
        "or replaced voxels (the paper's '10 % of voxels').",
    )
    blind_spot_strict: bool = Field(
        False,
        description="A truly blind spot: replacement values from outside the region, "
        "loss only on voxels whose own value is nowhere in the input.",
    )


@dataclass(frozen=True)
class NetworkPredictor:
    """A trained network from a checkpoint on (B, z, y, x) tiles, in the input's units.

    Tiles are normalised with the checkpoint's statistics of its first input, passed through
    the network ``network`` (up-sampling included) and de-normalised.
    """

    checkpoint: str
    sha256: str
    device: str
    amp: bool
    geometry: Geometry
    network: str = "model"
    input_name: str = "noisy"
    mean: float | None = None
    std: float | None = None
    output_name: str | None = None

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """Return the denoised tiles, same shape, float32, in the input's units.

        Normalised by ``mean``/``std`` when given (e.g. the input volume's own statistics),
        else by the checkpoint's statistics of ``input_name``; de-normalised by the same, or by
        the checkpoint's statistics of ``output_name`` (a supervised network's target).
        """
        tr = load_trained(self.checkpoint, self.sha256, self.device)
        mean, std = tile_statistics(tr, self.input_name, self.mean, self.std)
        out = checkpoint_normalisation(tr, self.output_name) if self.output_name else None
        return forward_normalised(
            tr.networks[self.network], tiles, mean, std, self.device, self.amp, out
        )


def checkpoint_normalisation(tr: Any, name: str) -> tuple[float, float]:
    """(mean, std) the checkpoint normalised its input ``name`` with (std never 0)."""
    norm = tr.normalisation.get(name, {})
    return float(norm.get("mean", 0.0)), float(norm.get("std", 1.0)) or 1.0


def tile_statistics(
    tr: Any, name: str, mean: float | None, std: float | None
) -> tuple[float, float]:
    """(mean, std) tiles are normalised with.

    ``mean``/``std`` when given (``--normalise input``), else the checkpoint's statistics of
    its input ``name``.
    """
    if mean is not None and std is not None:
        return mean, std
    return checkpoint_normalisation(tr, name)


def volume_normalisation(vol: Any) -> tuple[float, float]:
    """(mean, std) of a volume: its stored statistics, else one Dask pass."""
    stats = volume_statistics(vol)
    return float(stats["mean"]), float(stats["std"]) or 1.0


#: Sections read for :func:`sampled_normalisation` when a volume has no stored statistics.
SAMPLE_SECTIONS = 4


def sampled_normalisation(vol: Any) -> tuple[float, float]:
    """(mean, std) of a volume: its stored statistics, else a few evenly spaced sections.

    The sections cost a few chunk reads whatever the volume's size (a strided view of the
    whole volume would read every chunk): enough to tell data in other units, not a
    normalisation (:func:`volume_normalisation` is one).
    """
    stored = vol.attrs.get("statistics")
    if stored:
        return float(stored["mean"]), float(stored["std"])
    nz, ny, nx = (int(s) for s in vol.data.shape)
    zs = np.unique(np.linspace(0, nz - 1, min(nz, SAMPLE_SECTIONS)).round().astype(int))
    s = max(1, int(np.ceil(np.sqrt(ny * nx / 2e6))))  # at most ~2 M voxels per section
    sample = da.stack([vol.data[int(z), ::s, ::s] for z in zs]).astype(np.float64)
    mean, std = dask.compute(da.nanmean(sample), da.nanstd(sample))
    return float(mean), float(std)


def warn_if_unlike_training(vol: Any, trained: tuple[float, float], checkpoint: str) -> None:
    """Warn, with both figures, when ``vol``'s intensities are unlike the training data's.

    A checkpoint normalises tiles with its training statistics; a volume in other units (a
    scaled or shifted export, another detector gain) then reaches the network far outside
    what it learnt, and the output is garbage without any error. The warning fires when the
    standard deviations differ by more than ``UNLIKE_FACTOR`` or the means by more than
    ``UNLIKE_FACTOR`` training standard deviations.
    """
    mean, std = sampled_normalisation(vol)
    t_mean, t_std = trained
    ratio = std / t_std if t_std > 0 else float("inf")
    shift = abs(mean - t_mean) / t_std if t_std > 0 else float("inf")
    if not (1 / UNLIKE_FACTOR <= ratio <= UNLIKE_FACTOR) or shift > UNLIKE_FACTOR:
        log.warning(
            "%s: intensities (mean %.4g, std %.4g) are unlike those %s was trained on (mean "
            "%.4g, std %.4g): the output may be meaningless; check the volume's units, use "
            "--normalise input, or train on data like it",
            vol.path, mean, std, checkpoint, t_mean, t_std,
        )  # fmt: skip


def network_predictor(
    checkpoint: str | Path, device: str = "cpu", amp: bool = True, post_sigma: float = 0.0
) -> NetworkPredictor:
    """The tile predictor of a U-Net checkpoint, its geometry read from the checkpoint."""
    ckpt = str(Path(checkpoint).resolve())
    net = load_trained(ckpt, "", "cpu").networks["model"]
    return NetworkPredictor(ckpt, "", device, amp, network_geometry(net, post_sigma))


def network_geometry(net: torch.nn.Module, post_sigma: float = 0.0) -> Geometry:
    """The tiling geometry of a network that declares its reach.

    The network declares ``receptive_margin`` (z, y, x) and, optionally,
    ``receptive_margin_hi`` (when the two sides differ), ``forward_memory``,
    ``upsample_factors`` and ``tile_multiple`` (SC-Net's U-Net, the 2.5-D slice U-Net).

    Raises
    ------
    ValueError
        The network declares no reach.

    """
    margin = getattr(net, "receptive_margin", None)
    if margin is None:
        raise ValueError(f"network {type(net).__name__} declares no receptive_margin")
    hi = getattr(net, "receptive_margin_hi", None)
    return Geometry(
        margin=tuple(int(m) for m in margin),  # type: ignore[arg-type]
        multiple=int(getattr(net, "tile_multiple", TILE_MULTIPLE)),
        post_sigma=float(post_sigma),
        upsample=tuple(getattr(net, "upsample_factors", (1, 1, 1))),  # type: ignore[arg-type]
        margin_hi=None if hi is None else tuple(int(m) for m in hi),  # type: ignore[arg-type]
        memory=getattr(net, "forward_memory", None),
    )


def unet_of(options: Any) -> SCNetUNet:
    """The SC-Net U-Net of ``options`` (``features``, ``upsample``, ``upsample_axes``)."""
    return SCNetUNet(
        features=options.features,
        upsample=options.upsample,
        upsample_axes=getattr(options, "upsample_axes", "zx"),
    )


class UNetMethod(Method):
    """Base of the methods that train one :class:`SCNetUNet` called ``model``."""

    def build(self, options: Any) -> dict[str, torch.nn.Module]:
        """One SC-Net U-Net, ``model``."""
        return {"model": unet_of(options)}

    def forward(self, state: Any, x: torch.Tensor, train: bool) -> torch.Tensor:
        """Run ``model`` (its DDP wrapper while training) under bf16 autocast on CUDA."""
        dev = state.device
        net = state.forward["model"] if train else state.networks["model"]
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            return net(x)

    #: Input whose checkpoint statistics de-normalise the output (``None``: the first input's,
    #: the network predicts in its input's units).
    output_name: str | None = None

    def normalisation(self, options: Any, ctx: PredictContext) -> tuple[float, float] | None:
        """(mean, std) to normalise tiles with; ``None``: the checkpoint's.

        ``normalise: input`` (:class:`NormaliseOption`) gives the input volume's statistics
        (stored, else one Dask pass); a method without the option uses the checkpoint's.
        """
        if getattr(options, "normalise", "checkpoint") == "input":
            return volume_normalisation(ctx.volume)
        return None

    def tile_normalisation(
        self, options: Any, ctx: PredictContext, tr: Any
    ) -> tuple[float | None, float | None]:
        """:meth:`normalisation` as a predictor's ``(mean, std)``.

        ``(None, None)`` means the checkpoint's, with a warning when they meet unlike data. A
        checkpoint trained on a dataset (statistics ``per_tomogram``) normalises each volume by
        its own, as in training.
        """
        norm = self.normalisation(options, ctx)
        if norm is None and tr.normalisation.get(self.inputs[0], {}).get("per_tomogram"):
            # trained on a dataset, each tomogram normalised by its own statistics
            norm = volume_normalisation(ctx.volume)
        if norm is None:
            trained = checkpoint_normalisation(tr, self.inputs[0])
            warn_if_unlike_training(ctx.volume, trained, tr.path)
            return None, None
        return norm

    def checked_geometry(self, tr: Any, options: Any, ctx: PredictContext) -> Geometry:
        """The tiling geometry of the checkpoint's ``model``; one line naming it if it has none."""
        try:
            return network_geometry(tr.networks["model"], float(options.post_sigma))
        except ValueError as e:
            raise InputError(f"{ctx.checkpoint}: {e}") from None

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """The checkpoint's network on tiles; refuses a checkpoint of another voxel size."""
        tr = self.trained(ctx)
        geom = self.checked_geometry(tr, options, ctx)
        device = ctx.device
        mean, std = self.tile_normalisation(options, ctx, tr)
        pred = NetworkPredictor(
            tr.path, ctx.checkpoint_sha256, device, ctx.amp, geom, "model", self.inputs[0],
            mean, std, self.output_name,
        )  # fmt: skip
        return pred, self.details(tr, ctx, device)

    def details(self, tr: Any, ctx: PredictContext, device: str) -> dict[str, Any]:
        """Provenance of a checkpoint-based prediction."""
        return {
            "checkpoint": tr.path,
            "checkpoint_sha256": ctx.checkpoint_sha256,
            "train_config": tr.config,
            "train_options": _json(tr.options),
            "device": device,
            "amp": ctx.amp and device.startswith("cuda"),
        }

    def trained(self, ctx: PredictContext) -> Any:
        """The checkpoint of ``ctx``, checked: present, of this method, of this voxel size."""
        if ctx.checkpoint is None:
            raise InputError(
                f"--method {self.name} needs a CHECKPOINT (best.pt from 'scnet-dask train "
                f"--method {self.name}')"
            )
        ckpt = str(ctx.checkpoint.resolve())
        tr = load_trained(ckpt, ctx.checkpoint_sha256, "cpu")
        kind = str(tr.config.get("method", "scnet"))
        if kind != self.name:
            raise InputError(
                f"{ctx.checkpoint}: a {kind} checkpoint, but --method {self.name}; "
                f"pass --method {kind}"
            )
        vol = ctx.volume
        if tr.voxel_size_angstrom is not None and vol.voxel_size_found:
            trained, given = tr.voxel_size_angstrom, vol.voxel_size_angstrom
            if voxel_mismatch(trained, given) > VOXEL_TOLERANCE:
                raise InputError(
                    f"{ctx.checkpoint}: trained on {tuple(round(v, 3) for v in trained)} Å "
                    f"voxels but {vol.path} has {tuple(round(v, 3) for v in given)} Å; bin the "
                    "input to the training voxel size or train on it"
                )
        return tr


def _json(options: Any) -> dict[str, Any]:
    return dict(options.model_dump(mode="json"))
