"""``train --dataset``: which tomograms a run trains on, and their record in the run folder.

The record (``RUN/dataset.json``) holds, per training and validation tomogram, its files,
input signatures, shape, voxel size, the normalisation of every input (computed once by Dask)
and its sampling weight; ``--resume`` reuses it when the files are unchanged, so a resumed run
normalises and draws exactly as the first. Foreground masks (``--foreground-mask``) are small
coarse arrays beside it in ``RUN/masks/``.

By default every tomogram is used, up to :data:`DEFAULT_MAX` spread evenly over the dataset:
preparing a tomogram costs one read of it (its statistics; two more for SC-Net's prior fit),
memory does not grow with the count (the sampler keeps ``--open-tomograms`` readers), and the
peers' evidence (IsoNet2: 5-80 tomograms; DenoisET: 10-30) puts the useful count there.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from scnet_dask.config import TrainConfig
from scnet_dask.engine.dataset_readers import (
    input_volumes,
    lazy_inputs,
    tomogram_from_record,
    which_files,
)
from scnet_dask.engine.sampling import foreground_mask, mask_centres, split_regions
from scnet_dask.errors import InputError
from scnet_dask.io import voxel_mismatch
from scnet_dask.io._atomic import refuse_overlap
from scnet_dask.io.dataset import Dataset, Tomogram, find_dataset, select
from scnet_dask.io.tomogram import tomogram_signature
from scnet_dask.methods import Method, get
from scnet_dask.science.stats import compute_statistics

__all__ = [
    "DEFAULT_MAX",
    "DATASET_METHODS",
    "RECORD",
    "choose_tomograms",
    "prepare_dataset",
    "read_record",
    "check_dataset_method",
]

log = logging.getLogger(__name__)

#: Tomograms trained on by default when the dataset has more (see the module docstring).
DEFAULT_MAX = 32
#: The run folder's record of the tomograms.
RECORD = "dataset.json"
#: Relative voxel-size difference from the training set's median that is warned about.
VOXEL_SPREAD = 0.05
#: Edge (voxels) the coarse level of a foreground mask is reduced to, at most.
MASK_EDGE = 64

#: Methods that train on a dataset; the others say why not (``check_dataset_method``).
DATASET_METHODS = ("scnet", "n2v", "n2n", "s2s")
_WHY_NOT = {
    "fourier-n2n": "its Fourier pool is a set of resampled copies of one volume written "
    "before training; a pool per tomogram would multiply the disk by the pool size",
    "nmsg": "its noise model is fitted to one volume's noise before training",
    "supervised": "it needs a registered target volume per input",
    "vem-n2n": "it trains on one vEM stack's sub-lattices",
}


def check_dataset_method(method: Method) -> None:
    """Refuse a method that cannot train on a dataset, saying why (one line)."""
    if method.name in DATASET_METHODS:
        return
    why = _WHY_NOT.get(method.name, "a dataset cannot give its inputs")
    raise InputError(
        f"--method {method.name} trains on one volume, not --dataset ({why}); methods that "
        f"train on a dataset: {', '.join(DATASET_METHODS)}"
    )


def _spread(items: list[Tomogram], k: int, seed: int) -> list[Tomogram]:
    """``k`` of ``items`` evenly spaced through them, the offset drawn from ``seed``."""
    n = len(items)
    u = float(np.random.default_rng(seed).random())
    return [items[min(n - 1, int((j + u) * n / k))] for j in range(k)]


def choose_tomograms(ds: Dataset, cfg: TrainConfig) -> tuple[list[Tomogram], list[Tomogram]]:
    """The training and the held-back validation tomograms of ``ds`` for ``cfg``.

    ``--val-tomograms`` are held back whole; ``--tomograms`` names the training set, else every
    other tomogram; ``--train-count K`` (default: all up to :data:`DEFAULT_MAX`) keeps K of
    them evenly spaced through the dataset's order.

    Raises
    ------
    InputError
        Unknown names, a tomogram both trained on and held back, or fewer than K left.

    """
    val = select(ds, cfg.val_tomograms).tomograms if cfg.val_tomograms else []
    held = {t.name for t in val}
    if cfg.tomograms:
        pool = select(ds, cfg.tomograms).tomograms
        both = [t.name for t in pool if t.name in held]
        if both:
            raise InputError(
                f"{ds.source}: tomogram {both[0]!r} is both in --tomograms and --val-tomograms"
            )
    else:
        pool = [t for t in ds.tomograms if t.name not in held]
    if not pool:
        raise InputError(f"{ds.source}: no tomogram is left to train on")
    k = cfg.train_count or min(len(pool), DEFAULT_MAX)
    if k > len(pool):
        raise InputError(
            f"{ds.source}: --train-count {k} but only {len(pool)} tomogram(s) to choose from"
        )
    if k < len(pool):
        pool = _spread(pool, k, cfg.seed)
        if cfg.train_count is None:
            log.warning(
                "%s: training on %d of %d tomograms, spread over the dataset (default at most "
                "%d; --train-count or --tomograms choose)",
                ds.source, k, len(ds.tomograms) - len(val), DEFAULT_MAX,
            )  # fmt: skip
    return pool, val


def _check_voxel_spread(entries: list[dict[str, Any]], strict: bool, source: str) -> list[float]:
    """The median voxel size (z, y, x, Å); outliers beyond 5 % warned about (or refused)."""
    found = [e for e in entries if e["voxel_size_found"]]
    if not found:
        log.warning("%s: no tomogram has a voxel size in its header", source)
        return [float(v) for v in entries[0]["voxel_size_angstrom"]]
    median = [float(v) for v in np.median([e["voxel_size_angstrom"] for e in found], axis=0)]
    far = [e for e in found if voxel_mismatch(e["voxel_size_angstrom"], median) > VOXEL_SPREAD]
    if far:
        names = ", ".join(
            f"{e['name']} ({'x'.join(f'{v:.4g}' for v in e['voxel_size_angstrom'])} Å)"
            for e in far[:5]
        ) + (f" and {len(far) - 5} more" if len(far) > 5 else "")
        msg = (
            f"{source}: voxel sizes differ from the median "
            f"{'x'.join(f'{v:.4g}' for v in median)} Å by more than 5 %: {names}"
        )
        if strict:
            raise InputError(msg + " (--strict-voxel-size)")
        log.warning("%s; patches are drawn in voxels, so these tomograms' features have "
                    "another size (bin them, or leave them out with --tomograms)", msg)
    return median


def _mask_weight(
    noisy: da.Array, path: Path, region: Any, patch: tuple[int, int, int]
) -> tuple[float, int]:
    """Foreground mask of a coarse level, saved at ``path``; its weight (voxels) and factor."""
    factor = max(1, math.ceil(max(noisy.shape) / MASK_EDGE))
    level = da.coarsen(np.mean, noisy.astype(np.float64), dict.fromkeys(range(3), factor),
                       trim_excess=True).compute()  # fmt: skip
    mask = foreground_mask(level)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, mask)
    return float(len(mask_centres(mask, factor, region, patch))) * factor**3, factor


def _entry(
    t: Tomogram, cfg: TrainConfig, method: Method, patch: tuple[int, int, int], role: str
) -> dict[str, Any]:
    """One tomogram's record: files, signature, shape, voxel size, normalisation, weight."""
    vols = input_volumes(t, method.inputs)
    first = vols[next(iter(vols))]
    shape = tuple(int(s) for s in first.data.shape)
    arrays = lazy_inputs(vols, method.inputs, cfg.prior_sigma)
    stats: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        s = compute_statistics(arr)
        if s.get("n_nonfinite", 0) or not np.isfinite(s.get("std", np.nan)):
            raise InputError(
                f"{t.files[0]}: tomogram {t.name!r} ({name}) has NaN/Inf voxels or no finite "
                "statistics; run 'scnet-dask convert --nan-policy zero|mean' on it"
            )
        stats[name] = {"mean": float(s["mean"]), "std": float(s["std"]) or 1.0}
    labels = {k: f"{t.name} ({k})" for k in arrays}
    norm = method.input_statistics(cfg.options, stats, arrays, labels)
    val_fraction = cfg.val_fraction if (cfg.val_patches and role == "train") else 0.0
    region, val_region = split_regions(shape, patch, val_fraction)  # type: ignore[arg-type]
    entry: dict[str, Any] = {
        "name": t.name,
        "role": role,
        "files": {k: str(getattr(t, k)) if getattr(t, k) else None for k in ("full", "even",
                                                                             "odd")},
        "table_voxel_size_angstrom": list(t.voxel_size_angstrom or []) or None,
        "signature": json.loads(json.dumps(tomogram_signature(t, which_files(method.inputs)),
                                           default=str)),
        "shape": list(shape),
        "voxel_size_angstrom": [float(v) for v in first.voxel_size_angstrom],
        "voxel_size_found": bool(first.voxel_size_found),
        "norm": {k: [float(v["mean"]), float(v["std"]) or 1.0] for k, v in norm.items()},
        "region": [list(region.start), list(region.stop)],
        "val_region": [list(val_region.start), list(val_region.stop)] if val_region else None,
        "weight": float(np.prod([b - a for a, b in zip(region.start, region.stop,
                                                       strict=True)])),
        "mask": None,
        "mask_factor": 1,
    }  # fmt: skip
    if cfg.foreground_mask and role == "train":
        rel = f"masks/{t.name}.npy"
        noisy = arrays.get("noisy", arrays[next(iter(arrays))])
        entry["weight"], entry["mask_factor"] = _mask_weight(
            noisy, Path(cfg.out) / rel, region, patch
        )
        entry["mask"] = rel
        if entry["weight"] <= 0:
            raise InputError(
                f"{t.files[0]}: tomogram {t.name!r}: the foreground mask is empty inside the "
                "training region (leave it out, or train without --foreground-mask)"
            )
    return entry


def _settings(cfg: TrainConfig, method: Method, patch: tuple[int, int, int]) -> dict[str, Any]:
    """What the record's contents depend on besides the files (compared by ``--resume``)."""
    options = cfg.options.model_dump(mode="json") if cfg.options is not None else {}
    return {
        "source": str(cfg.dataset),
        "method": method.name,
        "inputs": list(method.inputs),
        "patch": list(patch),
        "val_fraction": cfg.val_fraction if cfg.val_patches else 0.0,
        "foreground_mask": cfg.foreground_mask,
        "prior_sigma": cfg.prior_sigma if "prior" in method.inputs else None,
        "prior_normalisation": options.get("prior_normalisation"),
        "tomograms": cfg.tomograms,
        "train_count": cfg.train_count,
        "val_tomograms": cfg.val_tomograms,
        "seed": cfg.seed,
    }


def read_record(out: Path) -> dict[str, Any]:
    """The run folder's dataset record (:data:`RECORD`)."""
    path = Path(out) / RECORD
    if not path.is_file():
        raise InputError(f"{out}: no {RECORD} (not a dataset run, or it never started)")
    return dict(json.loads(path.read_text()))


def _resume_record(cfg: TrainConfig, settings: dict[str, Any]) -> dict[str, Any]:
    """The record of the run being resumed, checked against this call and the files now."""
    rec = read_record(Path(cfg.out))
    changed = [k for k, v in settings.items() if rec["settings"].get(k) != v]
    if changed:
        k = changed[0]
        raise InputError(
            f"{cfg.out}: the run was prepared with {k}={rec['settings'].get(k)!r}, this call "
            f"gives {settings[k]!r}; --resume continues a run with its own settings"
        )
    method = get(cfg.method)
    for e in rec["training"] + rec["validation"]:
        now = tomogram_signature(tomogram_from_record(e), which_files(method.inputs))
        if json.loads(json.dumps(now, default=str)) != e["signature"]:
            raise InputError(
                f"{cfg.out}: tomogram {e['name']!r} changed since the run started "
                f"({e['files']}); --resume continues a run on its own inputs"
            )
    return rec


def prepare_dataset(cfg: TrainConfig) -> dict[str, Any]:
    """Find the dataset, choose its tomograms and write (or, with ``--resume``, check) the record.

    Called once per run, before any rank starts. Returns the record.
    """
    method = get(cfg.method)
    check_dataset_method(method)
    for name in method.inputs[1:]:
        if getattr(cfg.options, name, None) is not None:
            raise InputError(
                f"--{name} names one volume; with --dataset each tomogram's {name} comes from "
                "the dataset" + (" (a Gaussian of σ --prior-sigma)" if name == "prior" else "")
            )
    patch = method.patch_shape(cfg.options, cfg.patch_size)
    settings = _settings(cfg, method, patch)
    if cfg.resume:
        return _resume_record(cfg, settings)
    ds = find_dataset(str(cfg.dataset))
    refuse_overlap(cfg.out, *(f for t in ds.tomograms for f in t.files))
    train, val = choose_tomograms(ds, cfg)
    log.info("training on %d tomogram(s): %s", len(train), ", ".join(t.name for t in train))
    training = [_entry(t, cfg, method, patch, "train") for t in train]
    validation = [_entry(t, cfg, method, patch, "val") for t in val]
    median = _check_voxel_spread(training + validation, cfg.strict_voxel_size, ds.source)
    rec = {
        "settings": settings,
        "layout": ds.layout,
        "voxel_size_angstrom": median,
        "training": training,
        "validation": validation,
    }
    path = Path(cfg.out) / RECORD
    tmp = path.with_name(f".{RECORD}.tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(path)
    return rec
