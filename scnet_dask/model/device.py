"""Choosing the torch device from ``--device auto|cpu|cuda[:N]``."""

from __future__ import annotations

import logging

import torch

from scnet_dask.errors import InputError

__all__ = ["resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(spec: str) -> torch.device:
    """Return the device for ``spec``; ``auto`` falls back to the CPU with a log line.

    Raises
    ------
    InputError
        If a CUDA device is asked for and none is available.

    """
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("--device auto: no CUDA device found; running on the CPU")
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {spec}: no CUDA device is available on this machine")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    return torch.device("cpu")
