from __future__ import annotations

import numpy as np
import pytest
import zarr
from distributed import Client, Nanny, Scheduler, SpecCluster, get_task_stream

from scnet_dask.commands.denoise import denoise
from scnet_dask.config import DenoiseConfig
from tests.conftest import write_mrc
from tests.test_denoise import make_checkpoint, structured

pytestmark = pytest.mark.cluster


def _worker(resources=None):
    opts = {"nthreads": 1, "env": {"OMP_NUM_THREADS": "1"}}
    if resources:
        opts["resources"] = resources
    return {"cls": Nanny, "options": opts}


def test_threads_and_two_worker_cluster_agree_and_gpu_annotation_survives(tmp_path):
    vol = write_mrc(tmp_path / "v.mrc", structured((32, 48, 48), seed=2))
    ck = make_checkpoint(tmp_path / "c.pt", features=2)

    def cfg(name):
        return DenoiseConfig(
            input=vol,
            checkpoint=ck,
            output=tmp_path / name,
            chunks=16,
            tile=16,
            device="cpu",
            batch_size=2,
        )

    local = denoise(cfg("threads.zarr"), show_progress=False)
    assert local["annotations"] is None
    cluster = SpecCluster(
        scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
        workers={"cpu-worker": _worker(), "gpu-worker": _worker({"GPU": 1})},
    )
    with cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        with get_task_stream(client) as ts:
            res = denoise(cfg("cluster.zarr"), show_progress=False)
        workers = client.scheduler_info(n_workers=-1)["workers"]
        gpu_addr = next(a for a, w in workers.items() if (w.get("resources") or {}).get("GPU"))
    assert res["annotations"] == {"resources": {"GPU": 1}}
    net = [t for t in ts.data if "predict-net" in str(t["key"])]
    reads = [t for t in ts.data if "predict-tile" in str(t["key"])]
    assert len(reads) == 2 * 3 * 3  # tiles read in tasks of their own, off the GPU's task
    other = [t for t in ts.data if "predict-net" not in str(t["key"])]
    assert res["chunks_written"] == 2 * 3 * 3
    assert len(net) == 2 * 3 * 2  # rows of 3 tiles along x in batches of 2
    assert {t["worker"] for t in net} == {gpu_addr}  # the annotation was honoured
    assert len({t["worker"] for t in other}) == 2  # the rest spread over both workers
    a = zarr.open_group(str(tmp_path / "threads.zarr"), mode="r")["0"][...]
    b = zarr.open_group(str(tmp_path / "cluster.zarr"), mode="r")["0"][...]
    np.testing.assert_array_equal(a, b)
