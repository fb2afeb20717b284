"""Start one Dask worker per GPU of a batch job, each pinned to its own GPU.

dask-jobqueue starts one worker command per job; with ``--gpus-per-job G`` scnet-dask makes that
command ``python -m scnet_dask.distributed.gpu_worker SCHEDULER --gpus G ...``, which starts G
``distributed.cli.dask_worker`` processes (nanny, one worker each), process ``i`` with
``CUDA_VISIBLE_DEVICES`` set to the ``i``-th GPU the batch system gave the job (or ``i`` when it
gave no list), advertising ``GPU=1`` and named ``NAME-i`` as dask-jobqueue expects of a
multi-process job. Each worker thus sees exactly one GPU, as ``cuda:0``. SIGTERM and SIGINT are
passed on to the workers; the launcher exits when they all have.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["plan", "main"]


def plan(
    scheduler: str, gpus: int, visible: str | None, rest: Sequence[str], name: str | None
) -> list[tuple[dict[str, str], list[str]]]:
    """Per worker process: its environment overrides and its command line.

    Parameters
    ----------
    scheduler
        Scheduler address.
    gpus
        Workers to start, one per GPU.
    visible
        The job's ``CUDA_VISIBLE_DEVICES`` (a comma-separated list), or ``None``.
    rest
        Further ``dask worker`` arguments (``--nthreads``, ``--memory-limit``, ...).
    name
        The job's worker name; process ``i`` is named ``NAME-i``.

    Raises
    ------
    ValueError
        If the job sees fewer GPUs than ``gpus``.

    """
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    if not devices:
        devices = [str(i) for i in range(gpus)]
    if len(devices) < gpus:
        raise ValueError(
            f"--gpus {gpus}: the job sees only {len(devices)} GPU(s) (CUDA_VISIBLE_DEVICES="
            f"{visible!r})"
        )
    out = []
    for i in range(gpus):
        cmd = [sys.executable, "-m", "distributed.cli.dask_worker", scheduler, "--nanny",
               "--nworkers", "1", "--resources", "GPU=1", *rest]  # fmt: skip
        if name:
            cmd += ["--name", f"{name}-{i}"]
        out.append(({"CUDA_VISIBLE_DEVICES": devices[i]}, cmd))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``SCHEDULER --gpus G [--name NAME] [dask worker args...]`` and run the workers."""
    ap = argparse.ArgumentParser(prog="python -m scnet_dask.distributed.gpu_worker", add_help=True)
    ap.add_argument("scheduler")
    ap.add_argument("--gpus", type=int, required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--resources", default=None, help="ignored: each worker advertises GPU=1")
    args, rest = ap.parse_known_args(argv)
    procs: list[subprocess.Popen[Any]] = []
    for env, cmd in plan(args.scheduler, args.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"),
                         rest, args.name):  # fmt: skip
        procs.append(subprocess.Popen(cmd, env={**os.environ, **env}))

    def forward(signum: int, frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    return max(codes, default=0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
