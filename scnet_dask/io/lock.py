"""One writer per output: a lock file beside the output, naming the run that holds it.

``.NAME.lock`` (beside ``.NAME.partial``) is created atomically (``O_CREAT | O_EXCL``) and holds
the holder's host, process id and command. A second writer is refused at once with a line
naming the holder; a lock left by a process of this host that no longer runs (a kill) is taken
over with a warning. A lock of another host cannot be checked: it is refused, and the message
says how to remove it when that run is known to be dead. Locks are re-entrant within a process
(a writer that writes its target through a helper that locks it too).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from scnet_dask.errors import OutputError

__all__ = ["lock_path", "output_lock", "read_lock"]

log = logging.getLogger(__name__)

_HELD: dict[str, int] = {}
_GUARD = threading.Lock()


def lock_path(target: str | os.PathLike[str]) -> Path:
    """The lock file of ``target``: ``.NAME.lock`` in the same folder."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


def read_lock(path: Path) -> dict[str, Any]:
    """The holder recorded in a lock file (empty if unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run: another host's, or a live process of this host."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        pid = int(holder.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        proc = psutil.Process(pid)
        started = float(holder.get("started", 0.0))
        # a recycled pid belongs to a process started after the lock was written
        return proc.is_running() and (not started or proc.create_time() <= started + 1.0)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def _describe(holder: dict[str, Any]) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return f"{who}: {holder.get('command', '?')}"


def _create(path: Path) -> bool:
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "command": " ".join(sys.argv)[:300],
    }
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


def _acquire(target: Path) -> None:
    path = lock_path(target)
    if not path.parent.is_dir():
        return  # nothing can be written there; the writer reports the missing folder
    for _ in range(3):
        if _create(path):
            return
        holder = read_lock(path)
        if holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
            return  # this process's own lock, left by an earlier writer of the same target
        if holder and _alive(holder):
            raise OutputError(
                f"{target}: another run is writing this output ({_describe(holder)}); wait for "
                f"it to finish, or if it is dead remove {path}"
            )
        log.warning(
            "%s: taking over the lock of a run that no longer runs (%s)",
            target, _describe(holder) if holder else "unreadable lock file",
        )  # fmt: skip
        path.unlink(missing_ok=True)
    raise OutputError(f"{target}: could not take the lock {path}")


@contextmanager
def output_lock(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the lock of ``target`` for the body; yields the lock file's path.

    Raises
    ------
    OutputError
        At once, if another live run holds the lock (the message names it).

    """
    target = Path(target)
    key = str(target.resolve())
    with _GUARD:
        held = _HELD.get(key, 0)
        if not held:
            _acquire(target)
        _HELD[key] = held + 1
    try:
        yield lock_path(target)
    finally:
        with _GUARD:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
                path = lock_path(target)
                if read_lock(path).get("pid") == os.getpid():
                    path.unlink(missing_ok=True)
