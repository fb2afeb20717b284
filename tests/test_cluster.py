from __future__ import annotations

import os
import signal
import threading
import time

import dask
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster

from scnet_dask.cluster import ClusterSpec, cluster_client, make_jobqueue_cluster
from scnet_dask.config import DenoiseConfig
from scnet_dask.denoise import denoise
from scnet_dask.errors import InputError
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import make_checkpoint, structured

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    ("kind", "gpu_line"),
    [("slurm", "#SBATCH --gres=gpu:2"), ("pbs", "#PBS -l ngpus=2"), ("lsf", '#BSUB -gpu "num=2"')],
)
def test_job_scripts_carry_gpu_and_resource_lines(kind, gpu_line, tmp_path):
    pytest.importorskip("dask_jobqueue")
    cfg = {f"jobqueue.{kind}.cores": 8, f"jobqueue.{kind}.memory": "32GB"}
    with dask.config.set(cfg):
        spec = ClusterSpec(kind=kind, gpus_per_job=2, dashboard_address=":0", log_dir=tmp_path)
        cluster = make_jobqueue_cluster(spec)
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert gpu_line in script
    assert "--resources GPU=1" in script and "--nworkers 2" in script
    assert str(tmp_path) in script  # worker logs go to the run's folder


def test_jobqueue_without_config_is_one_clear_error():
    pytest.importorskip("dask_jobqueue")
    with dask.config.set({"jobqueue.sge.cores": None, "jobqueue.sge.memory": None}):
        with pytest.raises(InputError, match="--cluster sge: .*jobqueue.yaml"):
            make_jobqueue_cluster(ClusterSpec(kind="sge", dashboard_address=":0"))


def test_bad_cluster_specs(monkeypatch):
    import scnet_dask.cluster

    monkeypatch.setattr(scnet_dask.cluster, "CONNECT_TIMEOUT", "2s")
    with pytest.raises(InputError, match="--cluster must be one of"):
        ClusterSpec(kind="kubernetes")
    with pytest.raises(InputError, match="--workers must be >= 1"):
        ClusterSpec(kind="local", workers=0)
    with pytest.raises(InputError, match="cannot reach the scheduler"):
        with cluster_client(ClusterSpec(kind="tcp://127.0.0.1:1")):
            pass


def test_local_cluster_prints_dashboard_and_writes_worker_logs(tmp_path, capsys):
    src = write_mrc(tmp_path / "v.mrc", structured((16, 32, 32)))
    logs = tmp_path / "logs"
    code, out, err = run_cli(
        [
            "denoise", src, tmp_path / "o.zarr", "--method", "gaussian", "--chunks", "16",
            "--cluster", "local", "--workers", "2", "--dashboard-address", ":0",
            "--worker-logs", logs,
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "Dask dashboard: http://" in err
    assert len(list(logs.glob("worker-*.log"))) == 2


def test_killing_a_worker_mid_denoise_gives_the_identical_output(tmp_path):
    vol = write_mrc(tmp_path / "v.mrc", structured((48, 64, 64), seed=3))
    ck = make_checkpoint(tmp_path / "c.pt", features=4)

    def cfg(name):
        return DenoiseConfig(
            input=vol, checkpoint=ck, output=tmp_path / name, chunks=16, device="cpu"
        )

    denoise(cfg("ref.zarr"), show_progress=False)
    done = tmp_path / ".out.zarr.partial.done"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = client.run(os.getpid)
        victim = max(pids.values())
        killed = threading.Event()

        def killer():
            deadline = time.time() + 120
            while time.time() < deadline and len(list(done.glob("*"))) < 10:
                time.sleep(0.05)
            os.kill(victim, signal.SIGKILL)
            killed.set()

        th = threading.Thread(target=killer, daemon=True)
        th.start()
        res = denoise(cfg("out.zarr"), show_progress=False)
        th.join()
    assert killed.is_set() and res["chunks_written"] == 48
    a = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")["0"][...]
    b = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"][...]
    np.testing.assert_array_equal(a, b)
