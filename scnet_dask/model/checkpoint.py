"""Checkpoints: weights, optimiser, config, normalisation statistics, RNG states; atomic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from scnet_dask import __version__
from scnet_dask.errors import InputError

__all__ = ["FORMAT_VERSION", "save_checkpoint", "load_checkpoint", "migrate_v1"]

#: Bumped whenever the checkpoint layout changes. 2: ``method``, ``options`` (the method's),
#: ``config`` (the training engine's), ``networks`` and ``optimizers`` by name. Format 1 (one
#: ``model``, one ``optimizer``, one flat ``config``) is migrated on load.
FORMAT_VERSION = 2


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` plus format and package versions to ``path`` atomically.

    The payload may hold only tensors, numbers, strings, lists and dicts, so that it loads with
    ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    data = {"format_version": FORMAT_VERSION, "scnet_dask_version": __version__, **payload}
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(data, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises
    ------
    InputError
        If the file is missing, corrupt, not ours, or of an unknown format version. Format 1
        checkpoints (scnet-dask 0.1.0) are migrated in memory (see :func:`migrate_v1`).

    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise InputError(f"{path}: corrupt or unreadable checkpoint ({type(e).__name__})") from e
    if not isinstance(data, dict) or "format_version" not in data:
        raise InputError(f"{path}: not a scnet-dask checkpoint")
    if data["format_version"] == 1:
        data = migrate_v1(data, path)
    if data["format_version"] != FORMAT_VERSION:
        raise InputError(
            f"{path}: checkpoint format {data['format_version']} is incompatible with this "
            f"version of scnet-dask (format {FORMAT_VERSION})"
        )
    return data


def migrate_v1(data: dict[str, Any], path: str | os.PathLike[str] = "") -> dict[str, Any]:
    """Turn a format-1 checkpoint (one flat config) into the format-2 layout, in memory.

    The flat config's keys are split between the engine's :class:`~scnet_dask.config.TrainConfig`
    and the method's options; ``model``/``optimizer`` become ``networks["model"]`` and
    ``optimizers["model"]``.

    Raises
    ------
    InputError
        If the checkpoint holds no weights (it cannot be migrated).

    """
    from scnet_dask.config import TrainConfig
    from scnet_dask.methods import get

    if "model" not in data:
        raise InputError(f"{path}: not a scnet-dask training checkpoint (no weights)")
    flat = dict(data.get("config", {}))
    method = get(str(flat.get("method", "scnet")))
    own = set(method.train_options.model_fields) if method.train_options else set()
    engine = set(TrainConfig.model_fields)
    out = {k: v for k, v in data.items() if k not in ("model", "optimizer", "config")}
    out.update(
        format_version=FORMAT_VERSION,
        method=method.name,
        options={k: v for k, v in flat.items() if k in own},
        config={k: v for k, v in flat.items() if k in engine} | {"method": method.name},
        networks={"model": data["model"]},
        optimizers={"model": data["optimizer"]} if "optimizer" in data else {},
        migrated_from=1,
    )
    return out
