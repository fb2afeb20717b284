"""``denoise --dataset SOURCE --live``: follow an acquisition, denoise tomograms as they arrive.

Every ``--poll-s`` seconds the source is looked at again; a tomogram is denoised once it is
complete: every file it needs (full volume and halves) present, readable, and unchanged in size
since the previous look (or not modified for a whole poll interval). Runs until Ctrl-C (the
finished outputs stay valid; exit status 130) or ``--live-timeout-s``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

from scnet_dask.commands.dataset import DatasetRun
from scnet_dask.errors import InputError
from scnet_dask.io.dataset import Dataset, Tomogram
from scnet_dask.io.tomogram import open_tomogram, tomogram_files

__all__ = ["follow", "file_sizes"]

log = logging.getLogger(__name__)


def file_sizes(t: Tomogram) -> tuple[int, ...] | None:
    """Bytes of each file of ``t`` (a Zarr store: all its files); ``None``: one is missing."""
    sizes = []
    for p in t.files:
        try:
            if p.is_dir():
                sizes.append(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
            else:
                sizes.append(p.stat().st_size)
        except OSError:
            return None
    return tuple(sizes)


def _quiet_since(t: Tomogram, seconds: float) -> bool:
    """No file of ``t`` modified within the last ``seconds``."""
    now = time.time()
    try:
        return all(now - Path(p).stat().st_mtime > seconds for p in t.files)
    except OSError:
        return False


def _ready(t: Tomogram, apply: Literal["full", "halves"], sizes: tuple[int, ...] | None,
           before: tuple[int, ...] | None, poll_s: float) -> bool:  # fmt: skip
    """Complete: present, size stable (or quiet for a poll), and openable with consistent halves."""
    if sizes is None or (sizes != before and not _quiet_since(t, poll_s)):
        return False
    try:
        tomogram_files(t, apply)  # --apply halves: both halves are there
        open_tomogram(t, "full")  # the full volume, or the mean of the halves when none
        if t.has_halves and t.full is not None:
            open_tomogram(t, "mean")  # refuses halves of different shapes
    except (InputError, OSError, ValueError) as e:
        log.info("%s: not ready yet (%s)", t.name, e)
        return False
    return True


def follow(run: DatasetRun, first: Dataset) -> None:
    """Watch the dataset of ``run``; process each tomogram once complete (see module docstring)."""
    cfg = run.cfg
    deadline = None if cfg.live_timeout_s is None else time.monotonic() + cfg.live_timeout_s
    seen: dict[str, tuple[int, ...] | None] = {}
    ds = first
    run.echo(f"watching {cfg.dataset} every {cfg.poll_s:g} s (Ctrl-C to stop)")
    while True:
        pending = [t for t in ds.tomograms if t.name not in run.outcomes]
        ready = []
        for t in pending:
            sizes = file_sizes(t)
            if _ready(t, cfg.apply, sizes, seen.get(t.name), cfg.poll_s):
                ready.append(t)
            seen[t.name] = sizes
        if ready:
            run.process(ds, ready)
        if deadline is not None and time.monotonic() >= deadline:
            run.echo(f"--live-timeout-s {cfg.live_timeout_s:g} reached; stopping")
            return
        wait = cfg.poll_s if deadline is None else min(cfg.poll_s, deadline - time.monotonic())
        time.sleep(max(0.0, wait))
        try:
            ds = run.find(strict=False)
        except InputError as e:  # e.g. nothing there yet, or a transient ambiguity
            log.warning("%s", e)
