"""Where Dask runs: threads, a local cluster, a batch-system cluster, or a running scheduler.

``--cluster`` takes one of

* ``threads`` (default): Dask's threaded scheduler in this process, no scheduler to start;
* ``local``: a :class:`distributed.LocalCluster` of ``--workers`` processes with
  ``--threads-per-worker`` threads each (torch's threads pinned to match); on a machine with
  CUDA GPUs and ``dask-cuda`` installed, a ``LocalCUDACluster`` with one worker per GPU
  (``CUDA_VISIBLE_DEVICES`` pinned by dask-cuda) advertising the resource ``GPU=1``;
* ``slurm``, ``pbs``, ``lsf``, ``sge``: a ``dask-jobqueue`` cluster of ``--jobs`` jobs, one worker
  per GPU when ``--gpus-per-job`` is given (each advertising ``GPU=1``); queue, account,
  cores, memory, walltime and the rest come from the standard dask config
  (``~/.config/dask/jobqueue.yaml``; see ``examples/``);
* ``tcp://HOST:PORT``: attach to a scheduler that is already running.

The dashboard link is logged when a scheduler starts (``--dashboard-address``, local-only by
default); worker logs go to files in ``log_dir``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import torch
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from scnet_dask.config.cluster import JOBQUEUE_KINDS
from scnet_dask.config.cluster import ClusterConfig as ClusterSpec
from scnet_dask.errors import InputError

__all__ = [
    "ClusterSpec",
    "JOBQUEUE_KINDS",
    "WorkerSetup",
    "cluster_client",
    "make_jobqueue_cluster",
]

log = logging.getLogger(__name__)

#: How long to wait for a running scheduler given as ``tcp://HOST:PORT``.
CONNECT_TIMEOUT = "20s"
_GPU_DIRECTIVES = {
    "slurm": "--gres=gpu:{g}",
    "pbs": "-l ngpus={g}",
    "lsf": '-gpu "num={g}"',
    "sge": "-l gpu={g}",
}


class WorkerSetup(WorkerPlugin):
    """Worker plugin: pin torch's threads and, optionally, log to a file in ``log_dir``.

    Registered with ``Client.register_plugin``, so it runs on every worker, including those that
    join later (batch jobs) or restart after a crash.
    """

    name = "scnet-dask-worker-setup"

    def __init__(self, threads: int = 1, log_dir: str | None = None):
        super().__init__()
        self.threads = threads
        self.log_dir = log_dir

    def setup(self, worker: Any) -> None:
        """Called by the worker when the plugin is registered or the worker starts."""
        torch.set_num_threads(self.threads)
        if self.log_dir:
            safe = str(worker.name).replace("/", "_").replace(":", "_")
            handler = logging.FileHandler(Path(self.log_dir) / f"worker-{safe}-{os.getpid()}.log")
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s")
            )
            for name in ("distributed", "scnet_dask"):
                logging.getLogger(name).addHandler(handler)

    def teardown(self, worker: Any) -> None:
        """Nothing to release."""


def _lifetime(walltime: Any) -> str | None:
    """A worker ``--lifetime`` 5 minutes (or 10 %) shorter than a ``[D-]HH:MM[:SS]`` walltime."""
    if not walltime:
        return None
    text = str(walltime).strip()
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(v) for v in text.split(":")]
    while len(parts) < 3:
        parts.append(0)
    seconds = days * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    margin = min(300, seconds // 10)
    return f"{max(60, seconds - margin)}s"


def make_jobqueue_cluster(spec: ClusterSpec) -> Any:
    """A dask-jobqueue cluster for ``spec.kind`` (jobs not yet submitted).

    With ``gpus_per_job`` = G each job asks the batch system for G GPUs and runs
    :mod:`scnet_dask.distributed.gpu_worker`, which starts G worker processes, each pinned to its
    own GPU
    (``CUDA_VISIBLE_DEVICES``) and advertising ``GPU=1``. Everything else comes from the dask
    config.

    Raises
    ------
    InputError
        If dask-jobqueue is not installed or the dask config lacks required settings.

    """
    try:
        import dask_jobqueue
    except ImportError as e:
        raise InputError(
            f"--cluster {spec.kind} needs dask-jobqueue: pip install 'scnet-dask[cluster]'"
        ) from e
    cls = {
        "slurm": dask_jobqueue.SLURMCluster,
        "pbs": dask_jobqueue.PBSCluster,
        "lsf": dask_jobqueue.LSFCluster,
        "sge": dask_jobqueue.SGECluster,
    }[spec.kind]
    kwargs: dict[str, Any] = {"scheduler_options": {"dashboard_address": spec.dashboard_address}}
    if spec.gpus_per_job:
        g = spec.gpus_per_job
        kwargs["job_extra_directives"] = [_GPU_DIRECTIVES[spec.kind].format(g=g)]
        kwargs["processes"] = g  # per-process threads and memory; our launcher starts them
        kwargs["worker_command"] = "scnet_dask.distributed.gpu_worker"  # one worker per GPU, pinned
        kwargs["worker_extra_args"] = ["--gpus", str(g)]
    lifetime = _lifetime(dask.config.get(f"jobqueue.{spec.kind}.walltime", None))
    if lifetime:  # workers retire before the batch system kills them; adapt replaces the job
        extra = list(kwargs.get("worker_extra_args", []))
        kwargs["worker_extra_args"] = extra + ["--lifetime", lifetime, "--lifetime-stagger", "2m"]
    if spec.log_dir is not None:
        kwargs["log_directory"] = str(spec.log_dir)
    try:
        return cls(**kwargs)
    except ValueError as e:  # e.g. cores/memory missing from jobqueue.yaml
        msg = " ".join(str(e).split())
        raise InputError(
            f"--cluster {spec.kind}: {msg} (set it in ~/.config/dask/jobqueue.yaml; "
            "see examples/jobqueue.yaml)"
        ) from e


def _local_cluster(spec: ClusterSpec) -> Any:

    ngpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if ngpu:
        try:
            from dask_cuda import LocalCUDACluster

            return LocalCUDACluster(
                n_workers=spec.workers or ngpu,
                threads_per_worker=spec.threads_per_worker,
                dashboard_address=spec.dashboard_address,
                resources={"GPU": 1},
            )
        except ImportError:
            log.warning("dask-cuda is not installed; one CPU-pinned worker per GPU instead")
    return LocalCluster(
        n_workers=spec.workers or max(1, ngpu),
        threads_per_worker=spec.threads_per_worker,
        processes=True,
        dashboard_address=spec.dashboard_address,
        resources={"GPU": 1} if ngpu else None,
        env={"OMP_NUM_THREADS": str(spec.threads_per_worker)},
    )


@contextmanager
def cluster_client(spec: ClusterSpec) -> Iterator[Any]:
    """Start (or attach to) what ``spec`` describes; yield a ``distributed.Client`` or ``None``.

    While the context is open the client is Dask's default scheduler, so every computation in
    scnet-dask runs there. Clusters started here are closed on exit; an attached scheduler is
    left running.
    """
    if spec.kind == "threads":
        yield None
        return

    cluster: Any = None
    if spec.kind.startswith("tcp://"):
        try:
            client = Client(spec.kind, timeout=CONNECT_TIMEOUT)
        except OSError as e:
            raise InputError(f"--cluster {spec.kind}: cannot reach the scheduler ({e})") from e
    else:
        cluster = _local_cluster(spec) if spec.kind == "local" else make_jobqueue_cluster(spec)
        if spec.kind in JOBQUEUE_KINDS:
            # adapt with a fixed size: jobs that end at their wall time are replaced
            cluster.adapt(minimum_jobs=spec.jobs, maximum_jobs=spec.jobs)
        client = Client(cluster)
        log.info("Dask dashboard: %s", client.dashboard_link)
    try:
        log_dir = None
        if spec.log_dir is not None:
            spec.log_dir.mkdir(parents=True, exist_ok=True)
            log_dir = str(spec.log_dir.resolve())
        client.register_plugin(WorkerSetup(spec.threads_per_worker, log_dir))
        # our rechunks are small and local (slabs, tiles): plain tasks, not the p2p shuffle
        with dask.config.set(
            {"array.rechunk.method": "tasks", "scnet_dask.worker_timeout_s": spec.worker_timeout_s}
        ):
            yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
