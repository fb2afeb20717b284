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

from scnet_dask.commands.denoise import denoise
from scnet_dask.config import ClusterConfig as ClusterSpec
from scnet_dask.config import DenoiseConfig
from scnet_dask.distributed.cluster import cluster_client, make_jobqueue_cluster
from scnet_dask.errors import InputError
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import make_checkpoint, structured

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize(
    ("kind", "gpu_line"),
    [("slurm", "#SBATCH --gres=gpu:4"), ("pbs", "#PBS -l ngpus=4"), ("lsf", '#BSUB -gpu "num=4"')],
)
def test_job_scripts_start_one_pinned_worker_per_gpu(kind, gpu_line, tmp_path):
    pytest.importorskip("dask_jobqueue")
    cfg = {f"jobqueue.{kind}.cores": 8, f"jobqueue.{kind}.memory": "32GB"}
    with dask.config.set(cfg):
        spec = ClusterSpec(kind=kind, gpus_per_job=4, dashboard_address=":0", log_dir=tmp_path)
        cluster = make_jobqueue_cluster(spec)
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert gpu_line in script
    assert "-m scnet_dask.distributed.gpu_worker" in script and "--gpus 4" in script
    assert "--nthreads 2" in script  # 8 cores over 4 GPU workers
    assert str(tmp_path) in script  # worker logs go to the run's folder
    # what that command starts: 4 workers, each pinned to a different GPU, GPU=1 each
    from scnet_dask.distributed.gpu_worker import plan

    workers = plan("tcp://h:1", 4, "3,5,6,7", ["--nthreads", "2"], "job-0")
    assert [env["CUDA_VISIBLE_DEVICES"] for env, _ in workers] == ["3", "5", "6", "7"]
    assert all("GPU=1" in cmd and "--nworkers" in cmd for _, cmd in workers)
    assert [cmd[-1] for _, cmd in workers] == ["job-0-0", "job-0-1", "job-0-2", "job-0-3"]
    with pytest.raises(ValueError, match="sees only 2 GPU"):
        plan("tcp://h:1", 4, "0,1", [], None)


def test_gpu_worker_launcher_pins_each_worker_it_starts(tmp_path):
    import subprocess
    import sys

    with (
        LocalCluster(n_workers=0, dashboard_address=":0", processes=True) as cluster,
        Client(cluster) as client,
    ):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "4,9"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "scnet_dask.distributed.gpu_worker", cluster.scheduler_address,
             "--gpus", "2", "--name", "job", "--nthreads", "1"],
            env=env,
        )  # fmt: skip
        try:
            client.wait_for_workers(2, timeout=120)
            seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
            info = client.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(seen.values()) == ["4", "9"]
            assert all(w["resources"] == {"GPU": 1} for w in info)
            assert sorted(w["name"] for w in info) == ["job-0", "job-1"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def test_jobqueue_without_config_is_one_clear_error():
    pytest.importorskip("dask_jobqueue")
    with dask.config.set({"jobqueue.sge.cores": None, "jobqueue.sge.memory": None}):
        with pytest.raises(InputError, match="--cluster sge: .*jobqueue.yaml"):
            make_jobqueue_cluster(ClusterSpec(kind="sge", dashboard_address=":0"))


def test_bad_cluster_specs(monkeypatch):
    import scnet_dask.distributed.cluster

    monkeypatch.setattr(scnet_dask.distributed.cluster, "CONNECT_TIMEOUT", "2s")
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


def test_a_cluster_that_loses_all_workers_stops_the_run_and_resume_finishes(tmp_path):
    from scnet_dask.errors import RunStopped

    vol = write_mrc(tmp_path / "v.mrc", structured((32, 64, 64), seed=4))
    ck = make_checkpoint(tmp_path / "c.pt", features=4)

    def cfg(name, resume=False):
        return DenoiseConfig(
            input=vol, checkpoint=ck, output=tmp_path / name, chunks=16, device="cpu",
            resume=resume,
        )  # fmt: skip

    denoise(cfg("ref.zarr"), show_progress=False)
    done = tmp_path / ".out.zarr.partial.done"
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0")
        as cluster,
        Client(cluster),
        dask.config.set({"scnet_dask.worker_timeout_s": 3.0}),
    ):  # fmt: skip

        def vanish():
            deadline = time.time() + 120
            while time.time() < deadline and len(list(done.glob("*"))) < 4:
                time.sleep(0.05)
            cluster.scale(0)  # every job ended at its wall time

        th = threading.Thread(target=vanish, daemon=True)
        th.start()
        t0 = time.time()
        with pytest.raises(RunStopped, match="no worker for 3 s"):
            denoise(cfg("out.zarr"), show_progress=False)
        assert time.time() - t0 < 100
        th.join()
    assert (tmp_path / ".out.zarr.partial").exists() and len(list(done.glob("*"))) >= 4
    res = denoise(cfg("out.zarr", resume=True), show_progress=False)
    assert res["chunks_skipped"] >= 4
    a = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")["0"][...]
    b = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"][...]
    np.testing.assert_array_equal(a, b)


def test_worker_lifetime_follows_the_walltime(tmp_path):
    pytest.importorskip("dask_jobqueue")
    from scnet_dask.distributed.cluster import _lifetime

    assert _lifetime("01:00:00") == "3300s" and _lifetime("1-00:00") == "86100s"
    assert _lifetime(None) is None and _lifetime("00:10:00") == "540s"
    cfg = {"jobqueue.slurm.cores": 4, "jobqueue.slurm.memory": "8GB",
           "jobqueue.slurm.walltime": "02:00:00"}  # fmt: skip
    with dask.config.set(cfg):
        cluster = make_jobqueue_cluster(ClusterSpec(kind="slurm", dashboard_address=":0"))
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert "--lifetime 6900s" in script and "--lifetime-stagger 2m" in script
