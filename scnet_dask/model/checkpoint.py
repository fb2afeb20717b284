"""Checkpoints: weights, optimiser, config, normalisation statistics, RNG states; atomic."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scnet_dask import __version__
from scnet_dask.errors import InputError

__all__ = ["FORMAT_VERSION", "save_checkpoint", "load_checkpoint", "networks_sha256"]

#: Bumped whenever the checkpoint layout changes. 2: ``method``, ``options`` (the method's),
#: ``config`` (the training engine's), ``networks`` and ``optimizers`` by name. Format 1 (one
#: ``model``, one ``optimizer``, one flat ``config``) is migrated by the caller's ``upgrade``
#: (:func:`scnet_dask.methods.loading.migrate_v1`, which knows the methods' options).
FORMAT_VERSION = 2


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write ``payload`` plus format and package versions to ``path`` atomically.

    The payload may hold only tensors, numbers, strings, lists and dicts, so that it loads with
    ``torch.load(weights_only=True)``. A payload with ``networks`` also stores their SHA-256
    (:func:`networks_sha256`), verified by :func:`load_checkpoint`.
    """
    path = Path(path)
    data = {"format_version": FORMAT_VERSION, "scnet_dask_version": __version__, **payload}
    if isinstance(payload.get("networks"), dict):
        data["networks_sha256"] = networks_sha256(payload["networks"])
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(data, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    upgrade: Callable[[dict[str, Any], Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises
    ------
    InputError
        If the file is missing, corrupt, not ours, or of an unknown format version; if its
        weights hold NaN/Inf or do not match their stored SHA-256 (a damaged file). A format-1
        checkpoint (scnet-dask 0.1.0) is passed through ``upgrade`` (an error without one).

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
    if data["format_version"] == 1 and upgrade is not None:
        data = upgrade(data, path)
    if isinstance(data.get("networks"), dict):
        _check_weights(path, data)
    if data["format_version"] != FORMAT_VERSION:
        raise InputError(
            f"{path}: checkpoint format {data['format_version']} is incompatible with this "
            f"version of scnet-dask (format {FORMAT_VERSION})"
        )
    return data


def networks_sha256(networks: dict[str, Any]) -> str:
    """SHA-256 over every network's state dict (names and values, in sorted order)."""
    h = hashlib.sha256()
    for net in sorted(networks):
        for key, value in sorted(dict(networks[net]).items()):
            h.update(f"{net}.{key}".encode())
            if isinstance(value, torch.Tensor):
                h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
            else:
                h.update(repr(value).encode())
    return h.hexdigest()


def _check_weights(path: Path, data: dict[str, Any]) -> None:
    """Refuse weights that are not finite or do not match the stored hash (a damaged file)."""
    for net, state in data["networks"].items():
        for key, value in dict(state).items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                if not bool(torch.isfinite(value).all()):
                    raise InputError(
                        f"{path}: checkpoint holds non-finite weights ({net}.{key}); the file "
                        "is damaged or the run diverged: use another checkpoint"
                    )
    stored = data.get("networks_sha256")
    if stored is not None and stored != networks_sha256(data["networks"]):
        raise InputError(
            f"{path}: checkpoint weights do not match their stored SHA-256 (the file is "
            "damaged): use another checkpoint"
        )
