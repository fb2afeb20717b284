"""Checkpoints: weights, optimiser, config, normalisation statistics, RNG states; atomic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from scnet_dask import __version__
from scnet_dask.errors import InputError

__all__ = ["FORMAT_VERSION", "save_checkpoint", "load_checkpoint", "load_public_scnet"]

#: Bumped whenever the checkpoint layout changes incompatibly.
FORMAT_VERSION = 1


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
        If the file is missing, corrupt, not ours, or of another format version.

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
    if data["format_version"] != FORMAT_VERSION:
        raise InputError(
            f"{path}: checkpoint format {data['format_version']} is incompatible with this "
            f"version of scnet-dask (format {FORMAT_VERSION})"
        )
    return data


def load_public_scnet(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read the ``netG`` state dict from a public SC-Net checkpoint (``module.`` prefixes kept)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(f"{path}: unreadable SC-Net checkpoint ({type(e).__name__})") from e
    state = data.get("netG", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path}: no 'netG' state dict in this checkpoint")
    return state
