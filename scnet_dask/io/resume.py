"""The one resume mechanism of long writes (``convert``, ``denoise``): signature + markers.

A store being written records a *signature* of the job (input, options) in its attributes;
each finished unit of work (a slab of ``convert``, a chunk of ``denoise``) leaves an empty
*marker file* in a folder beside the store (``NAME.done``, never inside it, so the store stays a
valid Zarr). ``--resume`` with the same signature skips the marked units; another signature
starts over. Markers are written after their unit's data, so a kill between the two only
redoes that unit. A job may also keep a *record* beside its signature: facts of the run that do
not decide whether it resumes (``denoise``: the tile size it chose).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zarr

from scnet_dask.io._atomic import remove_path

__all__ = [
    "PROGRESS_KEY",
    "done_folder",
    "done_marker",
    "open_progress",
    "progress_record",
    "mark_done",
    "finish_progress",
]

log = logging.getLogger(__name__)

#: Attribute of a store being written that holds its job signature.
PROGRESS_KEY = "scnet_dask_progress"


def done_folder(store: str | os.PathLike[str]) -> Path:
    """Folder of the completion markers of ``store`` (beside it, not inside)."""
    p = Path(store)
    return p.with_name(f"{p.name}.done")


def done_marker(folder: str | os.PathLike[str], unit: Sequence[int]) -> Path:
    """Completion marker of work unit ``unit`` (e.g. a chunk's block index z, y, x)."""
    return Path(folder) / ".".join(str(int(c)) for c in unit)


def open_progress(
    group: zarr.Group, store: str | os.PathLike[str], signature: Any, record: Any = None
) -> bool:
    """Start or continue writing ``group`` (at ``store``) for the job ``signature``.

    Returns whether earlier work of the same job is continued. For another (or no) recorded
    signature, the group's arrays and the markers are removed and ``signature`` is recorded.
    ``record`` (JSON) is stored beside the signature either way, not compared (see
    :func:`progress_record`).
    """
    sig = json.loads(json.dumps(signature))
    value = group.attrs.get(PROGRESS_KEY, {})
    same = isinstance(value, dict) and value.get("signature") == sig
    if not same:
        if value:  # said at the default log level: --resume asked for the opposite
            log.warning(
                "%s: the partial output was written with other settings (or another input); "
                "it cannot be continued: starting over", store,
            )  # fmt: skip
        for name in list(group.array_keys()):
            del group[name]
        remove_path(done_folder(store))
    group.attrs[PROGRESS_KEY] = {"signature": sig, "record": json.loads(json.dumps(record))}
    return same


def progress_record(store: str | os.PathLike[str]) -> Any:
    """The ``record`` an unfinished write at ``store`` kept (``None``: no such write)."""
    if not (Path(store) / "zarr.json").exists():
        return None
    try:
        value = zarr.open_group(str(store), mode="r").attrs.get(PROGRESS_KEY, {})
    except (OSError, ValueError):
        return None
    return value.get("record") if isinstance(value, dict) else None


def mark_done(store: str | os.PathLike[str], unit: Sequence[int]) -> None:
    """Record that ``unit`` of ``store`` is written (after its data)."""
    marker = done_marker(done_folder(store), unit)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def finish_progress(group: zarr.Group, store: str | os.PathLike[str]) -> None:
    """The write is complete: drop the signature and the markers."""
    remove_path(done_folder(store))
    if PROGRESS_KEY in group.attrs:
        del group.attrs[PROGRESS_KEY]
