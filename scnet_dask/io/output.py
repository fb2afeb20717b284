"""One resumable output: its lock, its partial store, completion markers and scratch, one rename.

Every command that writes a volume, a file or a run folder goes through this object (directly,
or through :func:`atomic_output`, its one-shot form), so that the rules hold everywhere:

- the output is written under a hidden name beside the target (``.NAME.partial``, or a work
  OME-Zarr for outputs in another format) and renamed into place only when complete;
- one writer at a time: the lock (:mod:`scnet_dask.io.lock`) is held from before the partial
  output is touched until the end;
- an existing output is replaced only with ``overwrite``; without ``resume`` an earlier partial
  output and its markers are removed first;
- bad input (:class:`~scnet_dask.errors.InputError`) leaves nothing behind (partial store,
  markers and scratch removed); any other error keeps the work for ``--resume`` and is reported
  as :class:`~scnet_dask.errors.RunStopped` (with ``keep_on_error``); a kill keeps it too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import zarr

from scnet_dask.errors import InputError
from scnet_dask.io._atomic import check_output_target, partial_path, remove_path, stopped
from scnet_dask.io.lock import output_lock
from scnet_dask.io.omezarr import create_level
from scnet_dask.io.resume import done_folder, finish_progress, open_progress

__all__ = ["ResumableOutput", "atomic_output"]

log = logging.getLogger(__name__)


class ResumableOutput:
    """The life cycle of one output ``target``, as a context manager.

    Parameters
    ----------
    target
        The final path (file or folder).
    overwrite
        Replace an existing ``target``.
    resume
        Continue the partial store and markers of an interrupted run instead of starting over.
    keep_on_error
        Keep the partial work when the body fails for a reason other than bad input (then
        re-raised as :class:`~scnet_dask.errors.RunStopped`); otherwise remove it.
    store
        Where the work is written: by default ``.NAME.partial`` (renamed to ``target`` by
        :meth:`commit`); a work OME-Zarr for an output written in another format from it.

    Attributes
    ----------
    store, done, scratch
        The partial store, its completion-marker folder and the scratch folder for pieces.

    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        overwrite: bool = False,
        resume: bool = False,
        keep_on_error: bool = False,
        store: str | os.PathLike[str] | None = None,
    ):
        self.target = Path(target)
        self.overwrite = overwrite
        self.resume = resume
        self.keep_on_error = keep_on_error
        self.store = Path(store) if store is not None else partial_path(self.target)
        self.done = done_folder(self.store)
        self.scratch = self.target.with_name(f".{self.target.name}.scratch")
        self._lock: Any = None

    def __enter__(self) -> ResumableOutput:
        check_output_target(self.target, self.overwrite)
        self._lock = output_lock(self.target)
        self._lock.__enter__()
        if not self.resume and (self.store.exists() or self.done.exists()):
            log.info("removing stale partial output %s", self.store)
            remove_path(self.store)
            remove_path(self.done)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        try:
            if error is None:
                return False
            if isinstance(error, InputError):
                self.discard()
                return False
            if isinstance(error, Exception):
                if not self.keep_on_error:
                    self.discard()
                    return False
                raise stopped(self.target, error) from error
            return False  # a kill (KeyboardInterrupt, SystemExit): the work stays for --resume
        finally:
            self._lock.__exit__(None, None, None)

    def open_volume(
        self, shape: tuple[int, ...], chunks: int, signature: Any, record: Any = None
    ) -> zarr.Array:
        """Level 0 of the OME-Zarr ``store``, continued if it holds the same job's work.

        ``signature`` identifies the job (another one starts over, saying so); ``record`` is
        kept beside it (e.g. the tiling in use, for a later ``--resume``).
        """
        group = zarr.open_group(str(self.store), mode="a", zarr_format=3)
        open_progress(group, self.store, signature, record=record)
        ch = tuple(min(chunks, int(s)) for s in shape)
        return create_level(group, 0, shape, ch, np.dtype(np.float32))

    def finish(self) -> zarr.Group:
        """Mark the store's work complete (its progress record removed); the store's group."""
        group = zarr.open_group(str(self.store), mode="r+")
        finish_progress(group, self.store)
        return group

    def commit(self) -> None:
        """Rename the store into place (replacing an existing target); remove the markers."""
        target, tmp = self.target, self.store
        if target.exists():
            trash = target.with_name(f".{target.name}.old")
            remove_path(trash)
            os.replace(target, trash)
            os.replace(tmp, target)
            remove_path(trash)
        else:
            os.replace(tmp, target)
        remove_path(self.done)

    def discard(self) -> None:
        """Remove the store, its markers and the scratch folder."""
        for p in (self.store, self.done, self.scratch):
            remove_path(p)


@contextmanager
def atomic_output(
    target: Path, overwrite: bool = False, resume: bool = False, keep_on_error: bool = False
) -> Iterator[Path]:
    """Yield a temporary path to write ``target`` into; rename it into place on success.

    The one-shot form of :class:`ResumableOutput` (same lock, names and error rules): the body
    writes ``.NAME.partial``, which is renamed to ``target`` when the body returns.
    """
    with ResumableOutput(target, overwrite, resume, keep_on_error) as out:
        yield out.store
        out.commit()
