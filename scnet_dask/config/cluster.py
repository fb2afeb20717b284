"""The ``--cluster`` family of options, declared once: CLI flags, YAML keys and the runtime spec.

``cli`` generates the options of every command that runs on a cluster from this model's fields
(flag = alias, e.g. ``--cluster`` for ``kind``); :mod:`scnet_dask.distributed.cluster` starts or
connects to the cluster it describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from scnet_dask.config.common import StrictModel
from scnet_dask.errors import InputError

__all__ = ["ClusterConfig", "JOBQUEUE_KINDS"]

#: Batch systems reached through dask-jobqueue.
JOBQUEUE_KINDS = ("slurm", "pbs", "lsf", "sge")


class ClusterConfig(StrictModel):
    """Where a command's Dask tasks run (``threads``: this process, no cluster).

    Invalid values raise :class:`~scnet_dask.errors.InputError` naming the flag.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    kind: str = Field(
        "threads", alias="cluster",
        description="threads | local | slurm | pbs | lsf | sge | tcp://HOST:PORT.",
    )  # fmt: skip
    workers: int | None = Field(
        None, description="Workers of --cluster local (default: one per GPU, else 1)."
    )
    threads_per_worker: int = Field(1, description="Threads per worker.")
    jobs: int = Field(1, description="Batch jobs.")
    gpus_per_job: int = Field(0, description="GPUs per batch job.")
    dashboard_address: str = Field(
        "127.0.0.1:8787", description="Dashboard of a started scheduler (':0' = any free port)."
    )
    log_dir: Path | None = Field(
        None, alias="worker_logs", description="Folder for the workers' log files."
    )
    worker_timeout_s: float = Field(
        600.0, alias="worker_timeout",
        description="Seconds without any worker after which a run stops (resumable).",
    )  # fmt: skip

    def __init__(self, **data: Any):
        super().__init__(**data)
        self._check()

    def _check(self) -> None:
        """Refuse impossible values with one line naming the flag."""
        ok = ("threads", "local", *JOBQUEUE_KINDS)
        if self.kind not in ok and not self.kind.startswith("tcp://"):
            raise InputError(
                f"--cluster must be one of {', '.join(ok)} or tcp://HOST:PORT, got {self.kind!r}"
            )
        if self.workers is not None and self.workers < 1:
            raise InputError(f"--workers must be >= 1, got {self.workers}")
        if self.threads_per_worker < 1:
            raise InputError(f"--threads-per-worker must be >= 1, got {self.threads_per_worker}")
        if self.jobs < 1 or self.gpus_per_job < 0:
            raise InputError(
                f"--jobs must be >= 1 and --gpus-per-job >= 0, got {self.jobs}, {self.gpus_per_job}"
            )
