"""Computing a tiled output chunk by chunk, on the threaded scheduler or a Dask cluster.

Each output chunk is stored and marked done by one task (so a resumed run skips it); on a
cluster, tasks of a lost worker are retried on the others, finished chunks are released at
once, and a cluster left without workers stops the run instead of hanging. The prediction
tasks keep their resource annotations (no graph optimisation).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize
from dask.callbacks import Callback
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from distributed import default_client, wait
from tqdm import tqdm

from scnet_dask.distributed.jobs import cluster_disabled
from scnet_dask.errors import RunStopped
from scnet_dask.io._atomic import remove_path
from scnet_dask.io.resume import (
    done_marker,
)
from scnet_dask.tiling.graph import scratch_folder

__all__ = [
    "write_blocks",
]

log = logging.getLogger(__name__)


def _gpu_annotations() -> dict[str, Any] | None:
    """``resources={"GPU": 1}`` when a distributed client's workers advertise GPUs."""
    client = _client()
    if client is None:
        return None
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    if any("GPU" in (w.get("resources") or {}) for w in workers):
        return {"resources": {"GPU": 1}}
    return None


def _store_block(
    block: np.ndarray | None,
    arr: zarr.Array,
    region: tuple[slice, ...],
    marker: str,
    cleanup: str | None,
) -> int:
    if block is None:  # stored by an earlier attempt (see overlap_add's done_markers)
        if not Path(marker).exists():
            raise RuntimeError(f"chunk {region} has neither data nor a completion marker")
        return 0
    arr[region] = block
    Path(marker).touch()
    if cleanup:
        remove_path(Path(cleanup))
    return int(block.size)


def write_blocks(
    out: da.Array,
    arr: zarr.Array,
    done_dir: Path,
    show_progress: bool = True,
    desc: str = "denoise",
    scratch: Path | None = None,
) -> tuple[int, int]:
    """Compute ``out`` block by block into ``arr`` (same chunks), skipping finished blocks.

    A marker file per block in ``done_dir`` records completion after its write, so a killed run
    resumes with only the missing blocks (the tiles they need are recomputed; the others are
    culled from the graph). With ``scratch`` (see :func:`scnet_dask.tiling.graph.overlap_add`), a
    block's tile pieces are removed only after the block is stored. Runs on the current
    ``distributed`` client if there is one, else on the threaded scheduler; either way without
    graph optimisation, so that the prediction tasks keep their resource annotations.

    Returns
    -------
    written, skipped
        Numbers of blocks.

    """
    done_dir.mkdir(parents=True, exist_ok=True)
    if tuple(arr.chunks) != tuple(c[0] for c in out.chunks):
        raise ValueError(f"store chunks {arr.chunks} differ from the array's {out.chunksize}")
    name = f"store-{tokenize(out.name, str(arr.store), arr.path)}"
    layer: dict[Any, Any] = {}
    nblocks = out.numblocks
    starts = [np.cumsum((0, *c[:-1])) for c in out.chunks]
    skipped = 0
    for ijk in np.ndindex(*nblocks):
        marker = done_marker(done_dir, ijk)
        if marker.exists():
            skipped += 1
            continue
        region = tuple(
            slice(int(starts[k][ijk[k]]), int(starts[k][ijk[k]] + out.chunks[k][ijk[k]]))
            for k in range(3)
        )
        layer[(name, *ijk)] = (
            _store_block,
            (out.name, *ijk),
            arr,
            region,
            str(marker),
            str(scratch_folder(scratch, ijk)) if scratch is not None else None,
        )
    if skipped:
        log.info("resuming: %d of %d chunks already written", skipped, int(np.prod(nblocks)))
    if not layer:
        return 0, skipped
    graph = HighLevelGraph(
        {**out.dask.layers, name: MaterializedLayer(layer)},
        {**out.dask.dependencies, name: set(out.__dask_layers__())},
    )
    tasks = [Delayed(k, graph, layer=name) for k in layer]
    with tqdm(
        total=len(tasks), desc=desc, unit="chunk", file=sys.stderr, disable=not show_progress
    ) as bar:
        client = _client()
        if client is not None:
            _run_on_cluster(client, tasks, bar)
        else:

            class _Progress(Callback):
                def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
                    if isinstance(key, tuple) and key and key[0] == name:
                        bar.update(1)

            with _Progress():
                dask.compute(*tasks, optimize_graph=False, scheduler="threads")
    return len(layer), skipped


def _run_on_cluster(client: Any, tasks: list[Delayed], bar: Any) -> None:
    """Compute ``tasks`` on ``client``; tasks of a lost worker are retried on the others.

    Finished chunks are released at once (never recomputed if their worker dies later). If the
    cluster has no worker for ``scnet_dask.worker_timeout_s`` seconds (dask config, set by
    ``--worker-timeout``), the run stops with :class:`~scnet_dask.errors.RunStopped` instead of
    waiting forever.
    """
    limit = float(dask.config.get("scnet_dask.worker_timeout_s", 600.0))
    futures = client.compute(tasks, optimize_graph=False, retries=3)
    pending = set(futures)
    alone_since: float | None = None
    while pending:
        try:
            res = wait(pending, timeout=2.0, return_when="FIRST_COMPLETED")
            done, pending = set(res.done), set(res.not_done)
        except TimeoutError:
            done = set()
        for f in done:
            if f.status == "error":
                f.result()  # raises the task's error
            # not f.result() otherwise: a chunk task returns nothing we need, and fetching it
            # from a worker that has just died would wait for a recomputation that never comes
            f.release()  # a finished chunk is never recomputed if its worker dies later
            bar.update(1)
        if done:
            alone_since = None
            continue
        if client.scheduler_info(n_workers=-1).get("workers"):
            alone_since = None
        elif alone_since is None:
            alone_since = time.monotonic()
        elif time.monotonic() - alone_since > limit:
            client.cancel(list(pending))
            raise RunStopped(
                f"the cluster has had no worker for {limit:.0f} s (jobs ended or were killed); "
                "the chunks written so far are kept: rerun with --resume"
            )


def _client() -> Any:
    """The default ``distributed`` client, or ``None`` (none, or inside a job on a worker)."""
    if cluster_disabled():
        return None
    try:

        return default_client()
    except (ImportError, ValueError):
        return None
