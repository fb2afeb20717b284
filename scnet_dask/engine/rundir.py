"""The training run folder: what may be in it, and the log that resumes with it."""

from __future__ import annotations

import csv
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from scnet_dask.errors import InputError
from scnet_dask.io._atomic import refuse_overlap
from scnet_dask.methods import Method, get

__all__ = ["prepare_run_dir", "log_fields", "truncate_log", "META", "TIMING"]

log = logging.getLogger(__name__)

META = ["epoch", "step"]
TIMING = ["lr", "step_seconds", "wait_seconds"]


def prepare_run_dir(cfg: Any) -> None:
    """Check and create ``cfg.out``: refuse overlaps with inputs and folders of other files."""
    out = Path(cfg.out)
    if cfg.noisy is not None:  # a dataset's files are checked where it is found
        refuse_overlap(out, *get(cfg.method).user_inputs(cfg.noisy, cfg.options))
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: run directory path exists and is not a folder")
    if cfg.resume:
        if not (out / "last.pt").exists():
            raise InputError(f"{out}: nothing to resume (no last.pt)")
        return
    if (out / "last.pt").exists() and not cfg.overwrite:
        raise InputError(f"{out}: holds a training run; pass --resume to continue or --overwrite")
    ours = {"last.pt", "best.pt", "log.csv", "curves.png", "pool", "worker-logs", "previous-run",
            "dataset.json", "masks"}  # fmt: skip
    mine = ("epoch_", ".log.rank", ".last.pt", ".best.pt", ".dataset.json")
    names = [p.name for p in out.iterdir()] if out.is_dir() else []
    foreign = sorted(n for n in names if n not in ours and not n.startswith(mine))
    if (foreign or "log.csv" in names) and not cfg.overwrite:
        what = foreign[0] if foreign else "log.csv"
        raise InputError(
            f"{out}: folder already holds {what}; pass --overwrite to train there anyway, or "
            "choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    _set_aside_previous_run(out)


def _set_aside_previous_run(out: Path) -> None:
    """With ``--overwrite``: move an earlier run's files into ``out/previous-run/``.

    Nothing is deleted before the new run has work of its own: a run stopped before its first
    checkpoint leaves the earlier one intact there. Only a run with a checkpoint replaces an
    older ``previous-run/``; the log of one that never checkpointed is simply removed.
    """
    names = [
        p for p in out.iterdir()
        if p.name in ("last.pt", "best.pt", "log.csv", "curves.png")
        or (p.name.startswith("epoch_") and p.suffix == ".png")
    ]  # fmt: skip
    if not names:
        return
    if not (out / "last.pt").exists():  # leftovers of a run that never checkpointed
        for p in names:
            p.unlink()
        return
    aside = out / "previous-run"
    if aside.is_dir():
        shutil.rmtree(aside)
    aside.mkdir()
    for p in names:
        os.replace(p, aside / p.name)
    log.warning("%s: --overwrite: the earlier run's files were moved to %s", out, aside)


def log_fields(method: Method, validation: list[str] | None = None) -> list[str]:
    """Columns of ``log.csv`` for ``method``; ``validation``: extra columns (dataset runs)."""
    return [*META, *method.log_terms, *TIMING, *(validation or [])]


def truncate_log(path: Path, step: int, fields: list[str]) -> None:
    """Drop the rows after ``step`` (a resumed run rewrites them)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
