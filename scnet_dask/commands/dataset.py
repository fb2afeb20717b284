"""``denoise --dataset``: every tomogram of a dataset, one job per tomogram, resumable.

Per tomogram the volume (its full reconstruction, or the mean of its halves made on the fly)
is denoised by the single-volume path (:func:`scnet_dask.commands.denoise.denoise`: tiled,
blended, chunk markers) into ``DIR/NAME.mrc`` (or ``.zarr``), and a completion record
``DIR/.scnet-dask/NAME.json`` names what made it: the inputs' content signatures, the method,
its options and the checkpoint's SHA-256. A rerun skips tomograms whose record matches,
continues a half-done one from its chunk markers, and refuses to replace an output made
otherwise unless ``--overwrite``. One tomogram's failure does not stop the others.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from scnet_dask.commands.dataset_job import (
    Job,
    denoise_tomogram,
    output_identity,
    output_path,
    read_record,
    record_path,
)
from scnet_dask.config import DatasetConfig
from scnet_dask.distributed.compute import _gpu_annotations
from scnet_dask.distributed.jobs import run_bounded, worker_count
from scnet_dask.errors import InputError
from scnet_dask.io.dataset import Dataset, Tomogram, find_dataset, select
from scnet_dask.io.lock import output_lock
from scnet_dask.io.star import write_denoised_star

__all__ = ["Outcome", "denoise_dataset", "plan_dataset", "REPORT_COLUMNS"]

log = logging.getLogger(__name__)

#: Columns of ``DIR/report.csv``.
REPORT_COLUMNS = (
    "tomogram", "status", "input", "output", "method", "checkpoint", "seconds",
    "voxels_per_s", "peak_rss_mib", "fsc_0143_angstrom", "fsc_05_angstrom", "error",
)  # fmt: skip


@dataclass
class Outcome:
    """What became of one tomogram: ``done``, ``skipped`` (already done) or ``failed``."""

    name: str
    status: str
    record: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def plan_dataset(
    ds: Dataset, job: Job, skip_existing: bool
) -> tuple[list[tuple[Tomogram, Job]], list[Outcome]]:
    """Split ``ds`` into jobs to run and outcomes already known (skipped or refused).

    A finished output whose record matches is skipped (with ``skip_existing``); one made from
    other inputs, another method, options or checkpoint (or with no record) is refused unless
    ``--overwrite``; a tomogram with no output yet, or a half-done one, is run (``resume``
    continues it from its chunk markers).
    """
    todo: list[tuple[Tomogram, Job]] = []
    known: list[Outcome] = []
    for t in ds.tomograms:
        try:
            ident = output_identity(t, job)
        except (OSError, InputError) as e:
            known.append(Outcome(t.name, "failed", error=_line(e, t)))
            continue
        target = output_path(job, t.name)
        tj = replace(job, identity=ident)
        if not target.exists():
            todo.append((t, tj))
            continue
        rec = read_record(record_path(job, t.name))
        same = rec is not None and rec.get("identity") == ident
        if same and skip_existing and not job.overwrite:
            known.append(Outcome(t.name, "skipped", rec or {}))
        elif job.overwrite:
            todo.append((t, tj))
        else:
            why = "no completion record" if rec is None else _difference(rec["identity"], ident)
            known.append(
                Outcome(t.name, "failed", error=f"{target}: exists and was made otherwise "
                        f"({why}); --overwrite replaces it")  # fmt: skip
            )
    return todo, known


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    for key, label in (
        ("checkpoint_sha256", "another checkpoint"), ("method", "another method"),
        ("inputs", "other input files"), ("options", "other options"),
        ("settings", "other options"), ("apply", "other --apply"),
    ):  # fmt: skip
        if old.get(key) != new.get(key):
            return label
    return "another run"


def _line(e: BaseException, t: Tomogram) -> str:
    """One line for a tomogram's failure, naming its file when the message does not."""
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if not any(str(p) in text or p.name in text for p in t.files):
        text = f"{t.files[0]}: {type(e).__name__}: {text}"
    return text


def _run_jobs(
    todo: list[tuple[Tomogram, Job]], client: Any, in_flight: int, echo: Callable[[str], None]
) -> list[Outcome]:
    """Run the jobs: whole tomograms per worker, or tiles over the cluster when few."""
    out: list[Outcome] = []
    if not todo:
        return out
    workers = worker_count(client) if client is not None else 1
    per_worker = client is not None and len(todo) >= workers
    t0, n = time.monotonic(), len(todo)

    def finished(t: Tomogram, rec: Any, err: BaseException | None) -> None:
        if err is not None:
            out.append(Outcome(t.name, "failed", error=_line(err, t)))
            echo(f"  {t.name}: FAILED: {out[-1].error}")
        else:
            out.append(Outcome(t.name, "done", rec))
            echo(
                f"  {t.name}: {rec['voxels_per_s'] / 1e6:.2f} Mvoxel/s, {rec['seconds']:.1f} s"
            )
        k = len(out)
        eta = (time.monotonic() - t0) / k * (n - k)
        echo(f"[{k}/{n} tomograms, ETA {eta:.0f} s]")

    if per_worker:
        ann = _gpu_annotations()
        res = ann["resources"] if ann else None
        items = [(t, replace(j, local=True)) for t, j in todo]
        for (t, _), rec, err in run_bounded(
            client, _call, items, in_flight or 2 * workers, res, key=lambda it: it[0].name
        ):
            finished(t, rec, err)
        return out
    for t, j in todo:
        try:
            rec = denoise_tomogram(t, j)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one tomogram's failure does not stop the dataset
            log.debug("%s failed", t.name, exc_info=True)
            finished(t, None, e)
        else:
            finished(t, rec, None)
    return out


def _call(item: tuple[Tomogram, Job]) -> dict[str, Any]:
    return denoise_tomogram(*item)


def write_report(out_dir: Path, outcomes: Iterable[Outcome]) -> Path:
    """``DIR/report.csv``: one row per tomogram (see :data:`REPORT_COLUMNS`), atomically."""
    path = out_dir / "report.csv"
    tmp = out_dir / ".report.csv.partial"
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, REPORT_COLUMNS)
        w.writeheader()
        for o in sorted(outcomes, key=lambda o: o.name):
            r = o.record
            w.writerow(
                {"tomogram": o.name, "status": o.status, "error": o.error,
                 **{k: r.get(k, "") for k in REPORT_COLUMNS[2:-1]}}
            )  # fmt: skip
    os.replace(tmp, path)
    return path


def _write_star(ds: Dataset, job: Job, outcomes: Iterable[Outcome]) -> None:
    if ds.layout != "relion5":
        return
    done = {o.name: output_path(job, o.name) for o in outcomes if o.status in ("done", "skipped")}
    write_denoised_star(ds.star, Path(ds.source), job.out_dir / "tomograms.star", done)


@dataclass
class DatasetRun:
    """A dataset run's state: its config, job template, outcomes so far, and output hook."""

    cfg: DatasetConfig
    job: Job
    client: Any
    echo: Callable[[str], None]
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def find(self, strict: bool = True) -> Dataset:
        """The dataset now, restricted to the selection."""
        ds = find_dataset(str(self.cfg.dataset), strict=strict)
        return select(ds, self.cfg.tomograms, self.cfg.exclude)

    def process(self, ds: Dataset, tomograms: list[Tomogram]) -> None:
        """Plan and run ``tomograms`` of ``ds``; write the report (and the STAR file)."""
        sub = Dataset(ds.source, ds.layout, tomograms, ds.star)
        todo, known = plan_dataset(sub, self.job, self.cfg.skip_existing)
        for o in known:
            self.outcomes[o.name] = o
            if o.status == "skipped":
                self.echo(f"  {o.name}: skipped (done: {output_path(self.job, o.name).name})")
            else:
                self.echo(f"  {o.name}: FAILED: {o.error}")
        for o in _run_jobs(todo, self.client, self.cfg.in_flight, self.echo):
            self.outcomes[o.name] = o
        write_report(self.job.out_dir, self.outcomes.values())
        _write_star(ds, self.job, self.outcomes.values())


def denoise_dataset(
    cfg: DatasetConfig, job: Job, client: Any, echo: Callable[[str], None], live: Any = None
) -> list[Outcome]:
    """Denoise the dataset ``cfg.dataset`` into ``job.out_dir``; return each tomogram's outcome.

    ``live``: a callable ``live(run, ds)`` that keeps watching (``--live``), or ``None``.
    The output folder is locked for the run (a second dataset run into it is refused).
    """
    run = DatasetRun(cfg, job, client, echo)
    try:  # before DIR is made: a bad SOURCE leaves nothing behind
        ds = run.find(strict=not cfg.live)
    except InputError:
        if not cfg.live:
            raise
        ds = Dataset(str(cfg.dataset), "none yet", [])  # the acquisition has not started
    job.out_dir.mkdir(parents=True, exist_ok=True)
    with output_lock(job.out_dir / ".scnet-dask"):
        echo(f"{cfg.dataset}: {ds.layout} layout, {len(ds.tomograms)} tomograms")
        if live is None:
            run.process(ds, ds.tomograms)
        else:
            live(run, ds)
    return sorted(run.outcomes.values(), key=lambda o: o.name)

