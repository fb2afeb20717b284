"""``train``: the method-agnostic training engine.

The engine owns the loop, validation, ``log.csv``, the NaN stop, ``last.pt``/``best.pt``,
``--resume`` and DDP; the method (:mod:`scnet_dask.methods`) owns its networks, optimisers and
the step. Patches of every input the method names are sampled lazily from the OME-Zarr stores
(:class:`scnet_dask.engine.sampling.PatchSampler`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from scnet_dask.config import TrainConfig
from scnet_dask.engine.dataset_inputs import prepare_dataset
from scnet_dask.engine.run import _Run
from scnet_dask.engine.rundir import log_fields, prepare_run_dir, truncate_log
from scnet_dask.io.lock import output_lock
from scnet_dask.io.plots import training_curves, validation_slices
from scnet_dask.methods import get
from scnet_dask.methods.loading import load_checkpoint
from scnet_dask.model.checkpoint import save_checkpoint

__all__ = ["train", "prepare_inputs"]

log = logging.getLogger(__name__)


def train(
    cfg: TrainConfig,
    show_progress: bool = True,
    rank: int = 0,
    world: int = 1,
    stats: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train ``cfg.method`` on ``cfg.noisy`` (and its other inputs); checkpoints into ``cfg.out``.

    ``last.pt``, ``best.pt``, ``log.csv`` and plots go into ``cfg.out``.

    Parameters
    ----------
    rank, world
        Data-parallel rank and number of ranks; with ``world > 1`` the default
        ``torch.distributed`` process group must already be initialised (see
        :func:`scnet_dask.distributed.ddp.train_distributed`). Rank 0 writes the run folder.
    stats
        The inputs' normalisation statistics from :func:`input_statistics`; computed here
        when not given.

    Returns
    -------
    dict
        Epochs run, steps, final and best validation loss, mean step time (s), the fraction of
        the time the trainer waited for data, and a SHA-256 of the final weights.

    """
    # one writer per run folder; DDP ranks run under train_distributed's lock
    with output_lock(cfg.out) if world == 1 else contextlib.nullcontext():
        return _train(cfg, show_progress, rank, world, stats)


def _train(
    cfg: TrainConfig,
    show_progress: bool,
    rank: int,
    world: int,
    stats: dict[str, dict[str, Any]] | None,
) -> dict[str, Any]:
    """:func:`train`'s body, under the run folder's lock."""
    lead = rank == 0
    out = Path(cfg.out)
    run = _start(cfg, rank, world, stats, show_progress)
    fields = log_fields(run.method, run.validation_columns())
    log_path = out / ("log.csv" if lead else f".log.rank{rank}.csv")
    new_log = not log_path.exists()
    step_times: list[float] = []
    wall0 = time.perf_counter()
    wait0 = run.sampler.wait_seconds
    with open(log_path, "a", newline="") as logf:
        writer = csv.DictWriter(logf, fieldnames=fields)
        if new_log:
            writer.writeheader()
        try:
            for epoch in range(run.epoch + 1, cfg.epochs + 1):
                times, last = _run_epoch(run, epoch, writer, show_progress)
                step_times += times
                run.sampler.reset_queue()
                run.epoch = epoch
                if lead:  # the epoch's last row carries its validation columns
                    columns, val = _validate(run)
                    last.update(columns)
                writer.writerow(last)
                logf.flush()
                if lead:
                    _end_epoch(run, epoch, log_path, val)
        finally:
            run.sampler.close()
    if not lead:
        log_path.unlink(missing_ok=True)
    wall = time.perf_counter() - wall0
    waited = run.sampler.wait_seconds - wait0
    return {
        "run_dir": str(out),
        "method": run.method.name,
        "epochs": run.epoch,
        "steps": run.step,
        "best_val": run.best_val,
        "mean_step_seconds": float(np.mean(step_times)) if step_times else math.nan,
        "wait_fraction": waited / wall if wall > 0 else 0.0,
        "device": str(run.device),
        "rank": rank,
        "world": world,
        "weights_sha256": _weights_hash(run.state.networks),
    }


def _start(
    cfg: TrainConfig,
    rank: int,
    world: int,
    stats: dict[str, dict[str, Any]] | None,
    show_progress: bool,
) -> _Run:
    """The run folder, the method's preparation, the run state (restored with ``--resume``).

    Bad input leaves nothing behind: a run folder this call created is removed if still empty.
    """
    out = Path(cfg.out)
    created = not out.exists()
    if world == 1:  # train_distributed does these once, before starting the ranks
        prepare_run_dir(cfg)
    try:
        if world == 1:
            prepare_inputs(cfg, show_progress)
        run = _Run(cfg, rank, world, stats)
    except Exception:
        if created and out.is_dir() and not (out / "last.pt").exists():
            shutil.rmtree(out)  # bad input: leave nothing behind
        raise
    if cfg.resume:
        run.restore(load_checkpoint(out / "last.pt"))
        if rank == 0:
            truncate_log(out / "log.csv", run.step, log_fields(run.method,
                                                               run.validation_columns()))
        log.info("resuming at epoch %d, step %d", run.epoch + 1, run.step)
    if world > 1:
        ids = [run.device.index] if run.device.type == "cuda" else None
        run.state.forward = {
            k: DistributedDataParallel(v, device_ids=ids) for k, v in run.state.networks.items()
        }
    return run


def _run_epoch(
    run: _Run, epoch: int, writer: Any, show_progress: bool
) -> tuple[list[float], dict[str, Any]]:
    """The optimiser steps of one epoch, one ``log.csv`` row each.

    Returns the step times (s) and the last step's row, not yet written (it gets the
    validation columns).
    """
    cfg = run.cfg
    times = []
    row: dict[str, Any] = {}
    bar = tqdm(
        range(run.steps), desc=f"epoch {epoch}/{cfg.epochs}", file=sys.stderr,
        disable=not show_progress,
    )  # fmt: skip
    for _ in bar:
        t0 = time.perf_counter()
        w0 = run.sampler.wait_seconds
        batch = run.sampler.next_batch(cfg.batch_size)
        terms = run.method.step(run.state, batch, run.gen, train=True)
        run.state.step += 1
        dt = time.perf_counter() - t0
        times.append(dt)
        if row:
            writer.writerow(row)
        terms_row = {k: f"{float(terms[k].detach()):.6g}" for k in run.method.log_terms}
        row = {
            "epoch": epoch,
            "step": run.step,
            **terms_row,
            "lr": f"{run.current_lr():.6g}",
            "step_seconds": f"{dt:.4f}",
            "wait_seconds": f"{run.sampler.wait_seconds - w0:.4f}",
        }
        bar.set_postfix(loss=terms_row["total"])
    return times, row


def _validate(run: _Run) -> tuple[dict[str, Any], float]:
    """Rank 0 at an epoch's end: the validation columns and the loss ``best.pt`` follows.

    The columns (dataset runs): ``val`` and one per held-back tomogram. The loss: the mean over
    ``--val-tomograms`` when there are any, else the held-back region's loss.
    """
    val = run.validate()
    tomos = run.validate_tomograms()
    follow = float(np.mean(list(tomos.values()))) if tomos else val
    if not run.validation_columns():
        return {}, follow
    cols = {"val": f"{val:.6g}", **{f"val_{k}": f"{v:.6g}" for k, v in tomos.items()}}
    return cols, follow


def _end_epoch(run: _Run, epoch: int, log_path: Path, val: float) -> None:
    """Rank 0 at an epoch's end: ``last.pt`` / ``best.pt`` (by ``val``), figures."""
    out = Path(run.cfg.out)
    improved = not math.isnan(val) and val < run.best_val
    if improved:
        run.best_val = val
    save_checkpoint(out / "last.pt", run.payload())
    if improved or not (out / "best.pt").exists():
        save_checkpoint(out / "best.pt", run.payload())
    log.info("epoch %d: validation loss %.5g", epoch, val)
    if run.cfg.plots:
        training_curves(log_path, out / "curves.png", run.method.log_terms)
        if run.val_set:
            validation_slices(run.preview(), out / f"epoch_{epoch:03d}.png")


def prepare_inputs(cfg: TrainConfig, show_progress: bool = True) -> None:
    """Once per run, before any rank: the method's preparation, or the dataset's record."""
    if cfg.dataset is not None:
        prepare_dataset(cfg)
    else:
        get(cfg.method).prepare(cfg, show_progress)


def _weights_hash(networks: dict[str, torch.nn.Module]) -> str:
    """SHA-256 over the model's trainable weights (to compare data-parallel replicas).

    BatchNorm running statistics are left out: under DDP every rank updates them from its own
    batch, and rank 0's are broadcast at the start of each forward.
    """
    h = hashlib.sha256()
    params = [(f"{n}.{k}", v) for n, m in networks.items() for k, v in m.named_parameters()]
    for k, v in sorted(params, key=lambda kv: kv[0]):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
