"""Whole jobs (one tomogram each) on a Dask cluster, a bounded number in flight.

A dataset of hundreds of tomograms is never one graph: the driver submits at most
``in_flight`` jobs, and submits the next one as each finishes, so the driver's memory and the
scheduler's task count do not grow with the dataset. A job runs inside a worker on that
worker's own threads (:func:`local_compute`): it must not send tasks back to the cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import dask
from distributed import as_completed

__all__ = ["run_bounded", "local_compute", "cluster_disabled", "worker_count"]

T = TypeVar("T")

_LOCAL = threading.local()


def cluster_disabled() -> bool:
    """True inside :func:`local_compute` (the cluster client must not be used)."""
    return bool(getattr(_LOCAL, "on", False))


@contextmanager
def local_compute() -> Iterator[None]:
    """Compute on this process's threads, ignoring any default ``distributed`` client."""
    before = getattr(_LOCAL, "on", False)
    _LOCAL.on = True
    try:
        with dask.config.set(scheduler="threads"):
            yield
    finally:
        _LOCAL.on = before


def worker_count(client: Any) -> int:
    """Workers connected to ``client`` now (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))


def run_bounded(
    client: Any,
    fn: Callable[..., Any],
    items: Iterable[T],
    in_flight: int,
    resources: dict[str, float] | None = None,
    key: Callable[[T], str] = str,
    **kwargs: Any,
) -> Iterator[tuple[T, Any, BaseException | None]]:
    """Run ``fn(item, **kwargs)`` on the cluster, at most ``in_flight`` at a time.

    Yields ``(item, result, None)`` or ``(item, None, error)`` as each job ends, in completion
    order; one job's error does not stop the others. ``resources`` (e.g. ``{"GPU": 1}``) is
    given to each job's task.
    """
    if in_flight < 1:
        raise ValueError(f"in_flight must be >= 1, got {in_flight}")
    it = iter(items)
    owner: dict[str, T] = {}
    ac = as_completed()

    def submit_next() -> bool:
        item = next(it, None)
        if item is None:
            return False
        fut = client.submit(
            fn, item, key=f"{key(item)}-{dask.base.tokenize(item, kwargs)}", pure=False,
            resources=resources, **kwargs,
        )  # fmt: skip
        owner[fut.key] = item
        ac.add(fut)
        return True

    for _ in range(in_flight):
        if not submit_next():
            break
    for fut in ac:
        item = owner.pop(fut.key)
        if fut.status == "error":
            yield item, None, fut.exception()
        else:
            yield item, fut.result(), None
        fut.release()
        submit_next()
