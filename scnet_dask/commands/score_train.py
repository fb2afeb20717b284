"""Trained candidates that ``score`` trains itself, scored without leakage by a region split.

A candidate with ``train:`` (a short recipe: ``steps``, ``patch_size``, ``batch_size``, ``lr``,
``seed`` and the method's own training options) is not given checkpoints: ``score`` trains it.
The half is cut in two along its longer in-plane axis (y on a tie), regions A and B. One
model is trained on region A only, one on region B only; the scored output is B from the
model of A and A from the model of B, so no output voxel comes from a model that saw that
voxel's data — of either half. The output is then compared with the other half as for any
candidate:

- ``n2n`` trains on the even and odd halves of a region (its pairs); its two region models
  denoise both halves, both directions are scored;
- a single-volume method (``n2v``, ``scnet``, ``nmsg``, ...) trains on one region of the even
  half and is scored even→odd only (the odd direction would double the training);
  ``scnet``/``nmsg`` take ``prior:`` — a candidate's name, or ``best``: the best-scored
  Gaussian or Topaz-3D candidate — applied to the even half and cut like it.

What is scored is a model trained on half a half; what ``denoise --method auto`` delivers is
the same recipe trained the usual way on the whole input (:func:`train_delivered`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from pydantic import ValidationError

from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.evaluate import MethodSpec
from scnet_dask.config import DenoiseConfig, TrainConfig
from scnet_dask.config.common import format_validation_error, method_options
from scnet_dask.engine.train import train
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io.provenance import volume_attrs
from scnet_dask.io.store import write_volume_zarr
from scnet_dask.methods import get

__all__ = [
    "ENGINE_KEYS",
    "PRIOR_METHODS",
    "apply_spec",
    "check_train",
    "split_regions",
    "scored_halves",
    "prior_of",
    "region_output",
    "train_delivered",
]

#: Keys of ``train:`` that are the engine's; the others are the method's training options.
ENGINE_KEYS = ("steps", "patch_size", "batch_size", "lr", "seed")
#: Candidates that ``prior: best`` chooses among.
PRIOR_METHODS = ("gaussian", "topaz-3d")
_SET_HERE = ("odd", "prior")
_DEFAULTS: dict[str, Any] = {"steps": 200, "patch_size": 32, "batch_size": 2, "lr": 4e-4,
                             "seed": 0}  # fmt: skip


def _parts(spec: MethodSpec) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(engine settings, method options, prior) of a ``train:`` candidate."""
    t = dict(spec.train or {})
    prior = t.pop("prior", None)
    engine = {**_DEFAULTS, **{k: t.pop(k) for k in ENGINE_KEYS if k in t}}
    return engine, t, None if prior is None else str(prior)


def check_train(spec: MethodSpec) -> None:
    """Refuse a ``train:`` candidate that ``score`` cannot train, in one line.

    Raises
    ------
    InputError
        A method that is not trained or takes inputs other than a half (and its odd half or
        prior), an input path given in ``train:``, bad engine settings or method options.

    """
    method = get(spec.method)
    if not method.trains:
        raise InputError(f"candidate {spec.name!r}: method {spec.method} is not trained: drop "
                         "'train:'")  # fmt: skip
    if set(method.inputs[1:]) - set(_SET_HERE):
        raise InputError(f"candidate {spec.name!r}: score cannot train {spec.method} (inputs "
                         f"{', '.join(method.inputs)}): give checkpoint_even instead")  # fmt: skip
    if spec.checkpoint or spec.checkpoint_even or spec.checkpoint_odd:
        raise InputError(f"candidate {spec.name!r}: give 'train:' or checkpoints, not both")
    engine, opts, prior = _parts(spec)
    given = [k for k in _SET_HERE if k in opts]
    if given:
        raise InputError(f"candidate {spec.name!r}: train.{given[0]} is set by score (the "
                         "other half / the prior candidate), not by the candidate")  # fmt: skip
    if prior is not None and "prior" not in method.inputs:
        raise InputError(f"candidate {spec.name!r}: {spec.method} takes no prior, got "
                         f"prior: {prior}")  # fmt: skip
    if not isinstance(engine["steps"], int) or engine["steps"] < 1:
        raise InputError(f"candidate {spec.name!r}: train.steps must be a positive integer, "
                         f"got {engine['steps']!r}")  # fmt: skip
    try:
        method_options(spec.method, "train", opts)
        TrainConfig.model_validate({"noisy": "x", "out": "x", "method": spec.method,
                                    **_engine_fields(engine)})  # fmt: skip
    except ValidationError as e:
        msg = format_validation_error(e, "train")
        raise InputError(f"candidate {spec.name!r}: {msg}") from None
    except ValueError as e:
        raise InputError(f"candidate {spec.name!r}: train: {str(e).splitlines()[0]}") from None


def _engine_fields(engine: dict[str, Any]) -> dict[str, Any]:
    epochs = 2 if engine["steps"] >= 2 else 1
    return {"patch_size": engine["patch_size"], "batch_size": engine["batch_size"],
            "lr": engine["lr"], "seed": engine["seed"], "epochs": epochs,
            "steps_per_epoch": max(1, engine["steps"] // epochs), "val_patches": 2,
            "plots": False}  # fmt: skip


def scored_halves(spec: MethodSpec) -> tuple[str, ...]:
    """The halves a ``train:`` candidate denoises: both for n2n, the even one otherwise."""
    return ("even", "odd") if "odd" in get(spec.method).inputs else ("even",)


def split_regions(shape: tuple[int, ...], patch: int) -> tuple[int, list[slice]]:
    """(axis, [region A, region B]): the two halves of a (z, y, x) grid along y or x.

    Raises
    ------
    InputError
        A region narrower than the training patch.

    """
    axis = 1 if shape[1] >= shape[2] else 2
    cut = shape[axis] // 2
    if cut < patch or min(shape[0], shape[3 - axis]) < patch:
        raise InputError(
            f"a grid of {tuple(shape)} voxels cut in two along axis {axis} gives regions "
            f"smaller than the training patch {patch}: give train.patch_size <= "
            f"{min(cut, shape[0], shape[3 - axis]) // 16 * 16}"
        )
    return axis, [slice(0, cut), slice(cut, shape[axis])]


def _crop(src: Path, dst: Path, axis: int, region: slice) -> Path:
    """Write ``src``'s region (along ``axis``) to the OME-Zarr ``dst`` (reused if there)."""
    if (dst / "zarr.json").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    vol = open_source(src)
    idx = tuple(region if a == axis else slice(None) for a in range(3))
    data = vol.data[idx].astype(np.float32)
    attrs = volume_attrs(dst, "score-region", vol, region=[axis, region.start, region.stop])
    part = dst.with_name(dst.name + ".partial")
    shutil.rmtree(part, ignore_errors=True)
    write_volume_zarr(data, part, vol.voxel_size_angstrom, attrs, 64, 1, None, False)
    part.rename(dst)
    return dst


def apply_spec(
    spec: MethodSpec, src: Path, out: Path, ck: Path | None, chunks: int, device: str
) -> Path:
    """Denoise ``src`` into ``out`` (replaced) as candidate ``spec`` says, with checkpoint ``ck``.

    ``chunks`` is the tile core unless the candidate gives its own.
    """
    denoise(DenoiseConfig(input=src, output=out, checkpoint=ck, method=spec.method,
                          halo=spec.halo, chunks=spec.chunks or chunks, device=device,
                          overwrite=True, **spec.options()), show_progress=False)  # fmt: skip
    return out


def prior_of(spec: MethodSpec, src: Path, out: Path, chunks: int, device: str) -> Path:
    """The prior candidate ``spec`` applied to ``src`` (an OME-Zarr at ``out``, reused)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        apply_spec(spec, src, out, None, chunks, device)
    return out


def _train(spec: MethodSpec, inputs: dict[str, Path], run: Path, device: str) -> Path:
    """Train ``spec``'s recipe on ``inputs`` into ``run``; its last checkpoint.

    A finished run is reused; one with a ``last.pt`` but unfinished is resumed.
    """
    if (run / "last.pt").exists() and (run / "done").exists():
        return run / "last.pt"
    engine, opts, _ = _parts(spec)
    method = get(spec.method)
    resume = (run / "last.pt").exists()  # a run cut short by a kill or an error goes on
    cfg = {"noisy": inputs[method.inputs[0]], "out": run, "method": spec.method,
           "device": device, "overwrite": not resume, "resume": resume,
           **_engine_fields(engine), **opts,
           **{k: inputs[k] for k in method.inputs[1:] if k in inputs}}  # fmt: skip
    train(TrainConfig.model_validate(cfg), show_progress=False)
    (run / "done").write_text("")
    return run / "last.pt"


def region_output(
    spec: MethodSpec,
    half: str,
    halves: dict[str, Path],
    prior: Path | None,
    out: Path,
    work: Path,
    chunks: int,
    device: str,
    apply_to: Path | None = None,
) -> Path:
    """``half`` denoised by two region models, each voxel by the model that never saw it.

    Parameters
    ----------
    halves
        ``even`` and ``odd`` paths (same grid).
    prior
        The prior of the even half (for methods that take one), else ``None``.
    out
        The (z, y, x) output OME-Zarr, on the halves' grid.
    work
        This candidate's folder for the region crops and runs (removed by the caller).
    apply_to
        What the models of ``half`` denoise instead of ``half`` itself (a volume on its grid:
        the half made noisier), else ``None``.

    """
    method = get(spec.method)
    engine, _, _ = _parts(spec)
    shape = tuple(int(s) for s in open_source(halves["even"]).data.shape)
    axis, regions = split_regions(shape, int(engine["patch_size"]))
    work.mkdir(parents=True, exist_ok=True)
    dens = []
    for i, reg in enumerate(regions):
        crops: dict[str, Path] = {}
        if "odd" in method.inputs:  # n2n: the pair of one region, shared by both directions
            crops = {"even": _crop(halves["even"], work / f"even_{i}.zarr", axis, reg),
                     "odd": _crop(halves["odd"], work / f"odd_{i}.zarr", axis, reg)}  # fmt: skip
        else:
            crops[method.inputs[0]] = _crop(halves[half], work / f"{half}_{i}.zarr", axis, reg)
            if "prior" in method.inputs and prior is not None:
                crops["prior"] = _crop(prior, work / f"prior_{half}_{i}.zarr", axis, reg)
        ck = _train(spec, crops, work / f"run_{i}", device)
        den = work / f"den_{half if apply_to is None else Path(out).stem}_{i}.zarr"
        if not den.exists():
            apply_spec(spec, apply_to or halves[half], den, ck, chunks, device)
        dens.append(open_source(den).data.astype(np.float32))
    # region A from the model of B, region B from the model of A
    pick = [dens[1 - i][tuple(r if a == axis else slice(None) for a in range(3))]
            for i, r in enumerate(regions)]  # fmt: skip
    vol = open_source(apply_to or halves[half])
    shutil.rmtree(out, ignore_errors=True)
    attrs = volume_attrs(out, "score-region-models", vol, axis=axis, cut=regions[0].stop)
    write_volume_zarr(da.concatenate(pick, axis=axis), out, vol.voxel_size_angstrom, attrs,
                      64, 1, None, False)  # fmt: skip
    return out


def train_delivered(
    spec: MethodSpec, inputs: dict[str, Path], run: Path, device: str
) -> Path:
    """``spec``'s recipe trained the usual way on the whole ``inputs``; its last checkpoint.

    ``inputs`` maps the method's inputs (``noisy`` or ``even``/``odd``, ``prior``) to volumes.
    """
    return _train(spec, inputs, run, device)
