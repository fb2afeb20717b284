"""What a ``train --dataset`` run samples from: the record made into samplers and validation sets.

See :mod:`scnet_dask.engine.dataset_inputs` for how the tomograms are chosen and recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scnet_dask import __version__
from scnet_dask.config import TrainConfig
from scnet_dask.engine.dataset_inputs import read_record
from scnet_dask.engine.dataset_readers import (
    GaussianPrior,
    input_volumes,
    sliceable,
    tomogram_from_record,
)
from scnet_dask.engine.inputs import augment_planes
from scnet_dask.engine.multi_sampler import (
    Member,
    MultiSampler,
    OpenTomogram,
    ReaderPool,
    fixed_draws,
)
from scnet_dask.engine.sampling import Region
from scnet_dask.methods import Method

__all__ = ["DatasetInputs", "dataset_inputs", "members", "opener"]


@dataclass
class DatasetInputs:
    """A dataset run's sampler, validation patches and what its checkpoints record.

    Attributes
    ----------
    sampler
        Training patches over the training tomograms (this rank's seed).
    val_set
        Fixed patches of the held-back slabs of the training tomograms (``val`` column).
    val_tomograms
        Fixed patches of each ``--val-tomograms`` tomogram, by name (``val_NAME`` columns).
    normalisation
        Per input: the training set's mean statistics, ``per_tomogram: true`` (a denoise
        normalises each tomogram by its own) and the median voxel size.
    signatures, provenance
        The tomograms trained on, with their input signatures; the dataset's source.
    planes
        Rotation planes of the augmentation.
    tiles
        Non-overlapping patches in the training regions (the default epoch's length).

    """

    sampler: MultiSampler
    val_set: list[dict[str, np.ndarray]]
    val_tomograms: dict[str, list[dict[str, np.ndarray]]]
    normalisation: dict[str, dict[str, Any]]
    signatures: dict[str, Any]
    provenance: dict[str, str]
    planes: str
    tiles: int


def members(entries: list[dict[str, Any]], region: str = "region") -> list[Member]:
    """Sampler members of record ``entries``, drawing in their ``region`` (or ``val_region``)."""
    out = []
    for e in entries:
        box = e[region] if region != "whole" else [[0, 0, 0], e["shape"]]
        out.append(Member(
            e["name"], tuple(e["shape"]),  # type: ignore[arg-type]
            Region(tuple(box[0]), tuple(box[1])),  # type: ignore[arg-type]
            {k: (float(v[0]), float(v[1])) for k, v in e["norm"].items()},
            float(e["weight"]),
        ))  # fmt: skip
    return out


def opener(
    entries: list[dict[str, Any]], method: Method, prior_sigma: float, out: Path
) -> Any:
    """``open(i)``: the :class:`OpenTomogram` of ``entries[i]`` (readers, foreground mask)."""

    def open_one(i: int) -> OpenTomogram:
        e = entries[i]
        vols = input_volumes(tomogram_from_record(e), method.inputs)
        readers = {k: sliceable(v) for k, v in vols.items()}
        if "prior" in method.inputs:
            readers["prior"] = GaussianPrior(readers["noisy"], prior_sigma)
        mask = np.load(out / e["mask"]) if e.get("mask") else None
        return OpenTomogram(readers, mask, int(e.get("mask_factor", 1)))

    return open_one


def _fixed_patches(
    entries: list[dict[str, Any]], region: str, cfg: TrainConfig, method: Method,
    patch: tuple[int, int, int], n: int, planes: str,
) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """``n`` fixed, un-augmented patches spread over ``entries`` (read once, pool of one)."""
    if not entries or n == 0:
        return []
    ms = members(entries, region)
    pool = ReaderPool(opener(entries, method, cfg.prior_sigma, Path(cfg.out)), 1)
    vs = MultiSampler(ms, pool, list(method.inputs), patch, augment=False, planes=planes,
                      prefetch=1, workers=1)  # fmt: skip
    try:
        return [vs.read(key, (0, 0, 0, 0, 0)) for key in fixed_draws(ms, n, patch, cfg.seed + 2)]
    finally:
        vs.close()


def dataset_inputs(
    cfg: TrainConfig, method: Method, patch: tuple[int, int, int], rank: int
) -> DatasetInputs:
    """The run's sampler (seeded per rank) and validation sets, from ``RUN/dataset.json``."""
    out = Path(cfg.out)
    rec = read_record(out)
    train = rec["training"]
    planes = augment_planes(cfg.augment_planes, rec["voxel_size_angstrom"], patch)
    sampler = MultiSampler(
        members(train), ReaderPool(opener(train, method, cfg.prior_sigma, out),
                                   cfg.open_tomograms),
        list(method.inputs), patch, seed=cfg.seed + 7919 * rank, augment=cfg.augment,
        planes=planes, foreground=cfg.foreground_mask,
    )  # fmt: skip
    slabs = [e for e in train if e.get("val_region")]
    val_set = _fixed_patches(slabs, "val_region", cfg, method, patch, cfg.val_patches, planes)
    val_tomos = {
        e["name"]: _fixed_patches([e], "whole", cfg, method, patch, max(1, cfg.val_patches),
                                  planes)
        for e in rec["validation"]
    }  # fmt: skip
    w = np.array([e["weight"] for e in train])
    norm = {
        name: {
            "mean": float(np.average([e["norm"][name][0] for e in train], weights=w)),
            "std": float(np.average([e["norm"][name][1] for e in train], weights=w)),
            "per_tomogram": True,
            "voxel_size_angstrom": list(rec["voxel_size_angstrom"]),
        }
        for name in method.inputs
    }
    tiles = sum(
        math.prod((b - a) // p for a, b, p in zip(*e["region"], patch, strict=True))
        for e in train
    )
    return DatasetInputs(
        sampler=sampler,
        val_set=val_set,
        val_tomograms=val_tomos,
        normalisation=norm,
        signatures={"dataset": [[e["name"], e["signature"]] for e in train + rec["validation"]]},
        provenance={
            "dataset": str(rec["settings"]["source"]),
            "scnet_dask_version": __version__,
        },
        planes=planes,
        tiles=max(1, tiles),
    )
