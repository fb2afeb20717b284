"""Fourier-sampling Noise2Noise ("F2Fd", cryo-ET thesis): pairs from one tomogram's spectrum.

Before training, a pool of K volumes ``irfftn(F · mask_k)`` is built out of core from the
tomogram's whole-volume spectrum (:mod:`scnet_dask.methods.fourier_n2n.fft`) and written as
OME-Zarr in
``RUN/pool`` (or ``--pool``), its disk cost printed and checked first. Each training patch draws
``2 x pairs`` members without replacement: the first ``pairs`` are inputs, the last ``pairs``
targets, same crop, same augmentation; the network is a U-Net with dropout before every decoder
convolution (thesis: 0.8) and the loss the mean squared error over the whole patch. Inference
averages, per tile, ``passes`` x ``versions`` predictions: each pass draws ``versions`` pool
members at the tile's place, with the decoder dropout on, from a seed derived from the tile's
position (deterministic and ``--resume`` safe). A checkpoint denoises the tomogram its pool was
built from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import zarr
from pydantic import Field, model_validator

from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io._atomic import remove_path
from scnet_dask.io.output import atomic_output
from scnet_dask.io.provenance import volume_attrs
from scnet_dask.io.store import source_signature, write_volume_zarr
from scnet_dask.methods._dropout import DropoutMethod, mc_dropout
from scnet_dask.methods.base import Geometry, Options, PredictContext, TilePredictor, TrainState
from scnet_dask.methods.fourier_n2n.fft import (
    PoolSpec,
    check_disk,
    masked_inverse,
    pool_disk_bytes,
    rfftn_zarr,
)
from scnet_dask.methods.loading import load_trained
from scnet_dask.methods.runtime import infer
from scnet_dask.model.dropout_unet import DropoutUNet
from scnet_dask.tiling.blend import read_box

__all__ = [
    "FourierTrainOptions",
    "FourierDenoiseOptions",
    "FourierPredictor",
    "FourierN2n",
    "build_pool",
    "pool_members",
]

log = logging.getLogger(__name__)
_MANIFEST = "manifest.json"


class FourierTrainOptions(Options):
    """Options of ``train --method fourier-n2n``."""

    features: int = Field(32, ge=1, description="Channels of every U-Net level (nch_ker).")
    depth: int = Field(3, ge=1, le=5, description="Poolings of the dropout U-Net.")
    dropout: float = Field(0.8, ge=0, lt=1, description="Decoder dropout rate.")
    pool_size: int = Field(20, ge=2, le=500, description="Volumes in the Fourier pool (K).")
    pairs: int = Field(
        6, ge=1, le=64, description="(input, target) pool pairs per patch (M); draws 2M members."
    )
    pool_block: int = Field(8, ge=1, description="Edge of the Bernoulli frequency blocks.")
    pool_keep: float = Field(0.5, gt=0, lt=1, description="Keep probability of a block.")
    pool_flip: float = Field(0.1, ge=0, lt=1, description="Fraction of sign-flipped coefficients.")
    pool_float16: bool = Field(False, description="Store the pool as float16 (half the disk).")
    pool: Path | None = Field(
        None, description="Pool folder (built there if absent); default RUN/pool."
    )

    @model_validator(mode="after")
    def _enough_members(self) -> FourierTrainOptions:
        if self.pool_size < 2 * self.pairs:
            raise ValueError(
                f"pool_size {self.pool_size} is smaller than 2 x pairs = {2 * self.pairs} "
                "members, which each patch draws without replacement"
            )
        return self


class FourierDenoiseOptions(Options):
    """Options of ``denoise --method fourier-n2n``."""

    versions: int = Field(10, ge=1, le=500, description="Pool members per pass (K').")
    passes: int = Field(2, ge=1, le=1000, description="Dropout passes per tile (T).")


def _pool_dir(options: Any, run_dir: Path | None) -> Path:
    if options.pool is not None:
        return Path(options.pool)
    if run_dir is None:
        raise ValueError(f"fourier-n2n needs a run folder or --pool, got {run_dir}")
    return Path(run_dir) / "pool"


def pool_members(folder: Path, size: int) -> dict[str, Path]:
    """Names and paths of the members of the pool in ``folder``."""
    return {f"pool_{k:03d}": folder / f"member_{k:03d}.zarr" for k in range(size)}


def _manifest(noisy: Path, shape: Sequence[int], options: Any, seed: int) -> dict[str, Any]:

    return {
        "source": source_signature(Path(noisy)),
        "shape": [int(s) for s in shape],
        "seed": seed,
        "block": options.pool_block,
        "keep": options.pool_keep,
        "flip": options.pool_flip,
        "float16": options.pool_float16,
        "spectrum_chunk": 64,
    }


def build_pool(
    noisy: Path, folder: Path, options: Any, seed: int, show_progress: bool = True
) -> dict[str, Path]:
    """Build (or complete) the Fourier pool of ``noisy`` in ``folder``; returns its members.

    Members already written for the same source and settings are kept (the pool is resumable);
    a pool of other settings is refused. The disk cost is logged and checked before anything is
    written.

    Raises
    ------
    InputError
        If ``folder`` holds a pool of another volume or other settings.
    OutputError
        If the file system has too little free space.

    """
    vol = open_source(noisy)
    shape = tuple(int(s) for s in vol.data.shape)
    manifest = _manifest(noisy, shape, options, seed)
    members = pool_members(folder, options.pool_size)
    mf = folder / _MANIFEST
    if mf.exists():
        old = json.loads(mf.read_text())
        if old != manifest:
            raise InputError(
                f"{folder}: holds a Fourier pool of another volume or other settings; remove it "
                "or choose another --pool"
            )
    missing = [k for k, (_, p) in enumerate(members.items()) if not p.exists()]
    if not missing:
        return members
    pool_bytes, scratch_bytes = pool_disk_bytes(shape, len(missing), options.pool_float16)
    folder.mkdir(parents=True, exist_ok=True)
    check_disk(folder, pool_bytes + scratch_bytes)
    log.warning(
        "Fourier pool: %d of %d members of %s voxels, %.0f MiB on disk (+ %.0f MiB scratch "
        "while building) in %s",
        len(missing), options.pool_size, "x".join(map(str, shape)), pool_bytes / 2**20,
        scratch_bytes / 2**20, folder,
    )  # fmt: skip
    mf.write_text(json.dumps(manifest, indent=1))
    scratch = folder / ".scratch"
    dtype = np.float16 if options.pool_float16 else np.float32
    chunk = min(128, max(shape))
    try:
        spectrum = rfftn_zarr(vol.data, scratch / "forward", edge=manifest["spectrum_chunk"])
        names = list(members)
        for k in missing:
            spec = PoolSpec(shape, seed * 100_003 + k, options.pool_block, options.pool_keep,  # type: ignore[arg-type]
                            options.pool_flip)  # fmt: skip
            data = masked_inverse(spectrum, spec, scratch / "inverse", manifest["spectrum_chunk"])
            target = members[names[k]]
            attrs = volume_attrs(
                target, "fourier-pool", vol, member=k, seed=spec.seed, radius=spec.radius(),
                block=spec.block, keep=spec.keep, flip=spec.flip,
            )  # fmt: skip
            with atomic_output(target, overwrite=True) as tmp:
                write_volume_zarr(
                    data.astype(dtype), tmp, vol.voxel_size_angstrom, attrs, chunk, 1, None,
                    show_progress, desc=f"pool {k + 1}/{options.pool_size}",
                )  # fmt: skip
    finally:
        remove_path(scratch)
    return members


@lru_cache(maxsize=64)
def _member(path: str) -> zarr.Array:
    return zarr.open_group(path, mode="r")["0"]  # type: ignore[return-value]


@dataclass(frozen=True)
class FourierPredictor:
    """Per tile: mean over ``passes`` x ``versions`` dropout predictions from pool members."""

    checkpoint: str
    sha256: str
    device: str
    amp: bool
    members: tuple[str, ...]
    versions: int
    passes: int
    geometry: Geometry

    def __call__(
        self, tiles: np.ndarray, seeds: Sequence[int] | None = None,
        spans: Sequence[Any] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Return the denoised tiles (B, z, y, x), float32, in the input's units."""
        if seeds is None or spans is None:
            raise ValueError(f"fourier-n2n tiles need seeds and spans, got {seeds}, {spans}")
        tr = load_trained(self.checkpoint, self.sha256, self.device)
        net = cast(DropoutUNet, tr.networks["model"])
        norms = [tr.normalisation[Path(m).stem.replace("member", "pool")] for m in self.members]
        mean_out = float(np.mean([float(n["mean"]) for n in norms]))
        std_out = float(np.mean([float(n["std"]) for n in norms]))
        out = np.empty(tiles.shape, dtype=np.float32)
        with mc_dropout(net, self.device, tiles.size * self.passes * self.versions):
            for i in range(len(tiles)):
                rng = np.random.default_rng(int(seeds[i]))
                torch.manual_seed(int(seeds[i]))
                box, index = read_box(spans[i])
                sl = tuple(slice(a, b) for a, b in box)
                acc = np.zeros(tiles.shape[1:], dtype=np.float64)
                for _ in range(self.passes):
                    batch = []
                    for j in rng.choice(len(self.members), self.versions, replace=False):
                        raw = np.asarray(_member(self.members[j])[sl], np.float32)
                        n = norms[j]
                        x = (raw[np.ix_(*index)] - float(n["mean"])) / (float(n["std"]) or 1.0)
                        batch.append(x)
                    inp = torch.from_numpy(np.stack(batch)[:, None])
                    acc += infer(net, inp, self.device, self.amp).sum(axis=0)
                mean = acc / (self.passes * self.versions)
                out[i] = (mean * std_out + mean_out).astype(np.float32)
        return out


class FourierN2n(DropoutMethod):
    """Noise2Noise between Fourier-masked versions of one tomogram, dropout ensembles."""

    name = "fourier-n2n"
    summary = "Fourier-sampling Noise2Noise (F2Fd): pairs from a pool of masked spectra."
    inputs = ("noisy",)
    train_options = FourierTrainOptions
    denoise_options = FourierDenoiseOptions
    log_terms = ("total",)

    def input_paths(
        self, primary: Path, options: Any, run_dir: Path | None = None
    ) -> dict[str, Path]:
        """The pool members (built by :meth:`prepare`)."""
        return pool_members(_pool_dir(options, run_dir), options.pool_size)

    def user_inputs(self, primary: Path, options: Any) -> list[Path]:
        """The tomogram; the pool is made by the run (in its folder, or in ``--pool``)."""
        return [Path(primary)]

    def prepare(self, config: Any, show_progress: bool = True) -> None:
        """Build (or complete) the pool before training."""
        folder = _pool_dir(config.options, Path(config.out))
        build_pool(Path(config.noisy), folder, config.options, config.seed, show_progress)

    def patch_subset(self, options: Any) -> int | None:
        """Each patch draws ``2 x pairs`` pool members."""
        return 2 * int(options.pairs)

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """First ``pairs`` draws in, last ``pairs`` as targets; MSE over the patch."""
        m = int(state.options.pairs)
        x = torch.cat([torch.from_numpy(batch[f"draw{i}"]) for i in range(m)])
        y = torch.cat([torch.from_numpy(batch[f"draw{m + i}"]) for i in range(m)])
        x, y = x.to(state.device, non_blocking=True), y.to(state.device, non_blocking=True)
        out = self.forward(state, x, train).float()
        loss = torch.mean((out - y) ** 2)
        if train:
            state.update(loss, "model")
        return {"total": loss}

    def preview(self, state: TrainState, sample: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Two pool members and the network's output on the first."""
        net = state.networks["model"]
        x = torch.from_numpy(sample["draw0"][None, None]).to(state.device)
        with torch.no_grad():
            out = net(x).float().cpu().numpy()[0, 0]
        return {"pool member": sample["draw0"], "other member": sample["draw1"], "output": out}

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """A :class:`FourierPredictor` over the checkpoint's pool; the input must be its source."""
        tr, net = self.dropout_net(ctx)
        members = [p for k, p in sorted(tr.inputs.items()) if k.startswith("pool_")]
        if options.versions > len(members):
            raise InputError(
                f"--versions {options.versions} exceeds the {len(members)} pool members of "
                f"{ctx.checkpoint}"
            )
        missing = [p for p in members if not Path(p).exists()]
        if missing:
            raise InputError(f"{ctx.checkpoint}: pool member {missing[0]} is missing")
        pool_shape = tuple(_member(members[0]).shape)
        if pool_shape != tuple(ctx.volume.data.shape):
            raise InputError(
                f"{ctx.volume.path}: shape {tuple(ctx.volume.data.shape)} is not that of the "
                f"volume the checkpoint's Fourier pool was built from {pool_shape}; fourier-n2n "
                "denoises the tomogram it was trained on"
            )
        geom = Geometry(
            margin=net.receptive_margin, multiple=net.multiple, stochastic=True, positional=True
        )
        device = ctx.device
        pred = FourierPredictor(
            tr.path, ctx.checkpoint_sha256, device, ctx.amp, tuple(members), options.versions,
            options.passes, geom,
        )  # fmt: skip
        details = self.details(tr, ctx, device)
        details.update(versions=options.versions, passes=options.passes, pool=members[0])
        return pred, details
