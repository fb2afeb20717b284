"""The training run folder: what may be in it, and the log that resumes with it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from scnet_dask.errors import InputError
from scnet_dask.io._atomic import refuse_overlap
from scnet_dask.methods import Method, get

__all__ = ["prepare_run_dir", "log_fields", "truncate_log", "META", "TIMING"]

META = ["epoch", "step"]
TIMING = ["lr", "step_seconds", "wait_seconds"]


def prepare_run_dir(cfg: Any) -> None:
    """Check and create ``cfg.out``: refuse overlaps with inputs and folders of other files."""
    out = Path(cfg.out)
    refuse_overlap(out, *get(cfg.method).user_inputs(cfg.noisy, cfg.options))
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: run directory path exists and is not a folder")
    if cfg.resume:
        if not (out / "last.pt").exists():
            raise InputError(f"{out}: nothing to resume (no last.pt)")
        return
    if (out / "last.pt").exists() and not cfg.overwrite:
        raise InputError(f"{out}: holds a training run; pass --resume to continue or --overwrite")
    ours = {"last.pt", "best.pt", "log.csv", "curves.png", "pool", "worker-logs"}
    mine = ("epoch_", ".log.rank", ".last.pt", ".best.pt")
    names = [p.name for p in out.iterdir()] if out.is_dir() else []
    foreign = sorted(n for n in names if n not in ours and not n.startswith(mine))
    if (foreign or "log.csv" in names) and not cfg.overwrite:
        what = foreign[0] if foreign else "log.csv"
        raise InputError(
            f"{out}: folder already holds {what}; pass --overwrite to train there anyway, or "
            "choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", "best.pt", "log.csv", "curves.png"):
        (out / name).unlink(missing_ok=True)


def log_fields(method: Method) -> list[str]:
    """Columns of ``log.csv`` for ``method``."""
    return [*META, *method.log_terms, *TIMING]


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
