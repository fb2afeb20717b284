"""Checkpoints → methods: format migration and a trained checkpoint's networks, loaded once.

The checkpoint file format (:mod:`scnet_dask.model.checkpoint`) knows nothing of methods; this
module knows how to migrate an old layout (which needs the method's option names) and how a
method rebuilds its networks from a checkpoint.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import torch

from scnet_dask.errors import InputError
from scnet_dask.methods.base import Trained
from scnet_dask.methods.registry import get
from scnet_dask.model.checkpoint import FORMAT_VERSION
from scnet_dask.model.checkpoint import load_checkpoint as _load_file

__all__ = ["load_checkpoint", "migrate_v1", "load_trained", "with_axes"]


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a scnet-dask checkpoint, migrating a format-1 layout in memory.

    See :func:`scnet_dask.model.checkpoint.load_checkpoint` (which this calls with
    :func:`migrate_v1` as its upgrade).
    """
    return _load_file(path, map_location=map_location, upgrade=migrate_v1)


def migrate_v1(data: dict[str, Any], path: str | os.PathLike[str] = "") -> dict[str, Any]:
    """Turn a format-1 checkpoint (one flat config) into the format-2 layout, in memory.

    The flat config's keys that are the method's own options become ``options``; the others
    (the engine's) become ``config``; ``model``/``optimizer`` become ``networks["model"]`` and
    ``optimizers["model"]``.

    Raises
    ------
    InputError
        If the checkpoint holds no weights (it cannot be migrated).

    """
    if "model" not in data:
        raise InputError(f"{path}: not a scnet-dask training checkpoint (no weights)")
    flat = dict(data.get("config", {}))
    method = get(str(flat.get("method", "scnet")))
    own = set(method.train_options.model_fields) if method.train_options else set()
    out = {k: v for k, v in data.items() if k not in ("model", "optimizer", "config")}
    out.update(
        format_version=FORMAT_VERSION,
        method=method.name,
        options={k: v for k, v in flat.items() if k in own},
        config={k: v for k, v in flat.items() if k not in own} | {"method": method.name},
        networks={"model": data["model"]},
        optimizers={"model": data["optimizer"]} if "optimizer" in data else {},
        migrated_from=1,
    )
    return out


def with_axes(options: dict[str, Any], method: Any) -> dict[str, Any]:
    """Options of a checkpoint written before ``upsample_axes`` existed: its block was z and x."""
    fields = method.train_options.model_fields
    if "upsample_axes" in fields and "upsample" in options and "upsample_axes" not in options:
        return {**options, "upsample_axes": "zx"}
    return dict(options)


@lru_cache(maxsize=4)
def load_trained(path: str, sha256: str = "", device: str = "cpu") -> Trained:
    """Load a training checkpoint's networks once per process (cached by path, hash, device).

    The method named in the checkpoint rebuilds its networks from the checkpoint's options;
    the weights are loaded into them and put in eval mode on ``device``.

    Raises
    ------
    InputError
        If the file is not a scnet-dask training checkpoint or its weights do not fit.

    """
    data = load_checkpoint(path, map_location="cpu")
    missing = [k for k in ("networks", "config", "normalisation", "method") if k not in data]
    if missing:
        raise InputError(f"{path}: not a scnet-dask training checkpoint (no {', '.join(missing)})")
    method = get(str(data["method"]))
    if method.train_options is None:
        raise InputError(f"{path}: method {method.name} is not trainable")
    try:
        options = method.train_options(**with_axes(data.get("options", {}), method))
        nets = method.build(options)
        for name, net in nets.items():
            net.load_state_dict(data["networks"][name])
            net.eval().to(device)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise InputError(f"{path}: weights do not fit the network in its config ({e})") from e
    norm = {str(k): dict(v) for k, v in dict(data["normalisation"]).items()}
    first = next(iter(norm.values()), {})
    voxel = norm.get(method.inputs[0], first).get("voxel_size_angstrom")
    vox = (float(voxel[0]), float(voxel[1]), float(voxel[2])) if voxel else None
    prov = dict(data.get("provenance", {}))
    inputs = {k: str(v) for k, v in prov.items() if k != "scnet_dask_version" and v is not None}
    return Trained(nets, options, dict(data["config"]), norm, vox, path, sha256, inputs)
