from __future__ import annotations

import csv
import os
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from scnet_dask.config import TrainConfig
from scnet_dask.distributed.ddp import DistributedTrainingError, train_distributed
from scnet_dask.model.checkpoint import load_checkpoint
from tests.test_train import volumes  # noqa: F401  (fixture)

pytestmark = pytest.mark.cluster


def _cfg(n, p, out, **kw):
    base = dict(
        noisy=n, prior=p, out=out, patch_size=32, features=4, batch_size=1, epochs=2,
        steps_per_epoch=8, val_patches=1, plots=False, device="cpu",
        rec_warmup=0.0,  # all terms from step 1: the loss must fall, not rise as they ramp in
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def cluster2():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _totals(path):
    with open(path, newline="") as f:
        return [float(r["total"]) for r in csv.DictReader(f)]


def test_ddp_keeps_replicas_identical_and_lowers_the_loss(volumes, tmp_path, cluster2):  # noqa: F811
    n, p = volumes
    s = train_distributed(_cfg(n, p, tmp_path / "run"), cluster2)
    assert s["world"] == 2 and len(s["replica_sha256"]) == 2
    assert len(set(s["replica_sha256"])) == 1  # both ranks hold the same weights
    totals = _totals(tmp_path / "run" / "log.csv")
    assert len(totals) == 16  # rank 0 logs every step; the other rank writes nothing
    assert np.mean(totals[-4:]) < np.mean(totals[:4])
    assert sorted(x.name for x in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt", "log.csv"]
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["epoch"] == 2 and ck["step"] == 16


@pytest.mark.slow  # 36 s; the cluster tests cover a lost worker in denoise
def test_losing_a_worker_stops_cleanly_and_resume_continues(volumes, tmp_path, cluster2):  # noqa: F811
    n, p = volumes
    out = tmp_path / "run"
    cfg = _cfg(n, p, out, epochs=3, steps_per_epoch=12)
    pids = cluster2.run(os.getpid)
    victim = max(pids.values())

    def killer():
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "last.pt").exists():
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    with pytest.raises(DistributedTrainingError, match="last.pt is kept; rerun with --resume"):
        train_distributed(cfg, cluster2, timeout_s=10)
    th.join()
    ck = load_checkpoint(out / "last.pt")  # intact, loadable
    assert 1 <= ck["epoch"] < 3
    from scnet_dask.engine.train import train

    s = train(cfg.model_copy(update={"resume": True}), show_progress=False)
    assert s["epochs"] == 3 and s["steps"] == 36


def test_every_gpu_rank_gets_an_indexed_device(monkeypatch):
    import torch

    from scnet_dask.distributed.ddp import rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert rank_device(torch.device("cuda"), 5) == torch.device("cuda", 1)
    assert rank_device(torch.device("cuda", 3), 5) == torch.device("cuda", 3)
    assert rank_device(torch.device("cpu"), 5) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # a worker pinned to one GPU
    assert rank_device(torch.device("cuda"), 7) == torch.device("cuda", 0)


def test_ddp_nmsg_keeps_the_noise_model_and_the_unet_identical(volumes, tmp_path, cluster2):  # noqa: F811
    """NMSG's generator is stepped outside DDP, its gradients averaged by ``update(sync=True)``."""
    from scnet_dask.methods import get

    n, _ = volumes
    opts = get("nmsg").train_options(
        noise_bank={"cube": 12, "min_cubes": 8}, features=4,
        gan={"steps": 6, "features": 4, "batch": 4, "lambda_adversarial": 0.1, "critic_steps": 1},
    )  # fmt: skip
    cfg = TrainConfig(
        noisy=n, out=tmp_path / "run", method="nmsg", options=opts, patch_size=16,
        batch_size=1, epochs=2, steps_per_epoch=5, val_patches=1, plots=False, device="cpu",
    )  # fmt: skip
    s = train_distributed(cfg, cluster2)
    assert s["world"] == 2 and len(set(s["replica_sha256"])) == 1  # all three networks agree
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["step"] == 10 and set(ck["networks"]) == {"model", "generator", "critic"}
    assert (tmp_path / "run" / "noise_model.json").exists()  # written once, by rank 0
