"""Atomic outputs: write under a temporary name beside the target, rename when complete.

Every writer holds the output's lock meanwhile (:mod:`scnet_dask.io.lock`): a second run
writing the same output is refused at once, naming the first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from scnet_dask.errors import OutputError, RunStopped

__all__ = [
    "partial_path",
    "check_output_target",
    "refuse_overlap",
    "remove_path",
    "stopped",
]


def partial_path(target: Path) -> Path:
    """Return the temporary path used while ``target`` is being written.

    The name is deterministic so that ``--resume`` can find an interrupted run.
    """
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def check_output_target(target: Path, overwrite: bool) -> None:
    """Fail early, before any work, when ``target`` cannot be written.

    Raises
    ------
    OutputError
        If ``target`` exists and ``overwrite`` is False, or its folder is missing or unwritable.

    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: output exists; pass --overwrite to replace it")
    parent = target.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"{target}: output folder {parent} does not exist or is not a folder")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{target}: output folder {parent} is not writable")


def stopped(target: str | os.PathLike[str], error: BaseException) -> RunStopped:
    """The error of a resumable run that failed part-way: what happened, and ``--resume``."""
    first = (str(error).splitlines() or [""])[0]
    return RunStopped(
        f"{target}: stopped by {type(error).__name__}: {first}; the work done so far is kept, "
        "rerun the same command with --resume to continue"
    )


def refuse_overlap(output: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None) -> None:
    """Refuse an output that is, lies inside, or contains one of ``inputs``, whatever the flags.

    Inputs are never modified: writing ``in.zarr/sub.zarr``, replacing ``t.mrc`` by its own
    denoised volume or writing a run folder around a volume would.

    Raises
    ------
    OutputError
        Naming the output and the input it would touch.

    """
    out = Path(output).resolve()
    for item in inputs:
        if item is None:
            continue
        src = Path(item).resolve()
        if out == src or src in out.parents or out in src.parents:
            how = "is" if out == src else "is inside" if src in out.parents else "contains"
            raise OutputError(
                f"{output}: output {how} the input {item}; inputs are never modified, choose "
                "another output path"
            )
