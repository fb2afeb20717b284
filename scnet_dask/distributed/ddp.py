"""Data-parallel SC-Net training: PyTorch DDP ranks started on the Dask workers.

One rank per worker (one worker per GPU on GPU clusters): NCCL on CUDA, gloo on the CPU. Each
rank samples its own patches lazily from the shared OME-Zarr (its own seed), so the effective
batch is ``world x batch_size``; DDP averages the gradients; rank 0 validates and writes the
checkpoints, log and plots. If a worker is lost the surviving ranks fail at their next
collective (after ``timeout_s``), the run ends with a clear error, and ``last.pt`` - written
atomically - is intact; ``--resume`` continues from it (the weights and the optimiser exactly;
the patch streams of ranks other than 0 are re-seeded, so a multi-rank resume is not
bit-identical to an uninterrupted run).
"""

from __future__ import annotations

import datetime as _dt
import logging
import socket
from typing import Any

import torch
import torch.distributed as dist
from distributed import as_completed

from scnet_dask.config import TrainConfig
from scnet_dask.engine.inputs import input_statistics
from scnet_dask.engine.rundir import prepare_run_dir
from scnet_dask.engine.train import prepare_inputs, train
from scnet_dask.errors import InputError, RunStopped
from scnet_dask.io.lock import output_lock
from scnet_dask.model.device import resolve_device

__all__ = ["train_distributed", "DistributedTrainingError"]

log = logging.getLogger(__name__)


class DistributedTrainingError(RunStopped):
    """A rank failed or a worker was lost; the last checkpoint is kept."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def rank_device(device: Any, rank: int) -> Any:
    """The device of DDP ``rank`` on its worker: ``cuda:N`` with an index, or the CPU.

    A worker pinned to one GPU (``CUDA_VISIBLE_DEVICES`` of one device, as dask-cuda and
    ``scnet_dask.distributed.gpu_worker`` set it) uses ``cuda:0``; a worker that sees several GPUs
    uses
    ``cuda:{rank % count}``; an explicit ``cuda:N`` is kept.
    """
    if device.type != "cuda" or device.index is not None:
        return device
    count = max(1, torch.cuda.device_count())
    return torch.device("cuda", rank % count)


def _rank_main(
    rank: int,
    world: int,
    host: str,
    port: int,
    cfg_json: dict[str, Any],
    timeout_s: float,
    stats: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Run on a Dask worker: join the process group and train as ``rank``."""
    cfg = TrainConfig(**cfg_json)
    device = rank_device(resolve_device(cfg.device), rank)
    if device.type == "cuda":

        torch.cuda.set_device(device)  # always with an index: torch rejects a bare "cuda"
        cfg = cfg.model_copy(update={"device": str(device)})
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method=f"tcp://{host}:{port}",
        rank=rank,
        world_size=world,
        timeout=_dt.timedelta(seconds=timeout_s),
    )
    try:
        return train(cfg, show_progress=False, rank=rank, world=world, stats=stats)
    finally:
        dist.destroy_process_group()


def train_distributed(
    cfg: TrainConfig, client: Any, ranks: int | None = None, timeout_s: float | None = None
) -> dict[str, Any]:
    """Train ``cfg`` with one DDP rank on each of ``ranks`` Dask workers of ``client``.

    Returns
    -------
    dict
        Rank 0's summary (see :func:`scnet_dask.engine.train.train`) plus ``replica_sha256``: the
        weight hashes of every rank at the end (identical when the replicas agree).

    Raises
    ------
    DistributedTrainingError
        If a rank fails or a worker is lost; the message names the run's ``last.pt``.

    """
    with output_lock(cfg.out):  # one writer per run folder
        return _run_ranks(cfg, client, ranks, timeout_s)


def _run_ranks(
    cfg: TrainConfig, client: Any, ranks: int | None, timeout_s: float | None
) -> dict[str, Any]:
    """:func:`train_distributed`'s body, under the run folder's lock."""
    prepare_run_dir(cfg)
    prepare_inputs(cfg, show_progress=False)
    # once, here: not in every rank before the first collective (a dataset's are in its record)
    stats = input_statistics(cfg) if cfg.dataset is None else None
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    world = ranks or len(workers)
    if world < 1 or world > len(workers):
        raise InputError(f"--ranks {world}: the cluster has {len(workers)} worker(s)")
    chosen = workers[:world]
    host = chosen[0].split("://", 1)[-1].rsplit(":", 1)[0]
    # the rendezvous port is probed on rank 0's own host, where the store will listen
    port = int(client.submit(_free_port, workers=[chosen[0]], pure=False).result())
    cfg_json = cfg.model_dump(mode="json")
    timeout_s = float(timeout_s if timeout_s is not None else cfg.ddp_timeout_s)
    log.info("DDP: %d ranks on %s, rendezvous tcp://%s:%d", world, chosen, host, port)
    futures = [
        client.submit(
            _rank_main,
            r,
            world,
            host,
            port,
            cfg_json,
            timeout_s,
            stats,
            workers=[w],
            allow_other_workers=False,
            pure=False,
            retries=0,
            key=f"scnet-ddp-rank-{r}-{port}",
        )
        for r, w in enumerate(chosen)
    ]
    failure: str | None = None
    for f in as_completed(futures):
        if f.status != "finished":  # a rank failed; a rank whose worker died never completes,
            exc = f.exception()  # but its partner fails at the next collective
            failure = f"{type(exc).__name__}: {exc}".splitlines()[0]
            break
    if failure is not None:
        client.cancel(futures)
        raise DistributedTrainingError(
            f"{cfg.out}: distributed training stopped ({failure}); the last checkpoint "
            f"{cfg.out}/last.pt is kept; rerun with --resume to continue"
        )
    results = [f.result() for f in futures]
    summary = dict(results[0])
    summary["replica_sha256"] = [r["weights_sha256"] for r in results]
    return summary
