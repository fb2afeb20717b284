"""GPU paths: run with ``python -m pytest -m gpu`` on a machine with CUDA; skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scnet_dask.commands.denoise import denoise
from scnet_dask.config import DenoiseConfig
from scnet_dask.io import open_source
from tests.conftest import write_mrc
from tests.test_denoise import make_checkpoint, structured

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("amp", [False, True])
def test_denoise_on_gpu_matches_cpu(tmp_path, amp):
    src = write_mrc(tmp_path / "v.mrc", structured((48, 64, 64)))
    ck = make_checkpoint(tmp_path / "c.pt", features=4)
    outs = {}
    for dev in ("cpu", "cuda"):
        cfg = DenoiseConfig(
            input=src, checkpoint=ck, output=tmp_path / f"{dev}.zarr", chunks=32, device=dev,
            amp=amp, batch_size=2,
        )  # fmt: skip
        denoise(cfg, show_progress=False)
        outs[dev] = np.asarray(open_source(tmp_path / f"{dev}.zarr").data)
    err = np.sqrt(np.mean((outs["cuda"] - outs["cpu"]) ** 2)) / outs["cpu"].std()
    assert err < (2e-2 if amp else 1e-3)


def _train_args(vol, out, *extra):
    return ["train", vol, "--method", "n2v", "--out", out, "--patch-size", "32", "--features",
            "8", "--epochs", "3", "--steps-per-epoch", "4", "--val-patches", "1", "--device",
            "cuda", "--no-plots", *extra]  # fmt: skip


def test_training_resume_on_gpu_continues_exactly(tmp_path, capsys):
    import scnet_dask.engine.run as tr
    from tests.conftest import run_cli

    src = write_mrc(tmp_path / "v.mrc", structured((48, 64, 64)), voxel=10.0)
    vol = tmp_path / "v.zarr"
    assert run_cli(["convert", src, vol, "--chunks", "32"], capsys)[0] == 0
    assert run_cli(_train_args(vol, tmp_path / "ref"), capsys)[0] == 0
    real, calls = tr._Run.validate, {"n": 0}

    def killed(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self)

    tr._Run.validate = killed
    try:
        assert run_cli(_train_args(vol, tmp_path / "run"), capsys)[0] == 130
    finally:
        tr._Run.validate = real
    assert run_cli(_train_args(vol, tmp_path / "run", "--resume"), capsys)[0] == 0
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)["networks"]["model"]
    b = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["networks"]["model"]
    for k in a:  # cuDNN may pick other kernels after a restart: equal to float tolerance
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_ddp_on_every_visible_gpu_keeps_replicas_identical(tmp_path):
    from distributed import Client, LocalCluster

    from scnet_dask.commands.convert import convert
    from scnet_dask.config import ConvertConfig, TrainConfig
    from scnet_dask.distributed.ddp import train_distributed

    n = torch.cuda.device_count()
    src = write_mrc(tmp_path / "v.mrc", structured((48, 64, 64)), voxel=10.0)
    vol = tmp_path / "v.zarr"
    convert(ConvertConfig(input=src, output=vol, chunks=32), show_progress=False)
    cfg = TrainConfig.model_validate({
        "noisy": vol, "out": tmp_path / "run", "method": "n2v", "patch_size": 32, "features": 8,
        "epochs": 1, "steps_per_epoch": 3, "val_patches": 1, "device": "cuda", "plots": False,
    })  # fmt: skip
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:  # fmt: skip
        s = train_distributed(cfg, client)
    assert len(s["replica_sha256"]) == n and len(set(s["replica_sha256"])) == 1


def test_local_cuda_cluster_denoise_equals_threads(tmp_path):
    pytest.importorskip("dask_cuda")
    from scnet_dask.config import ClusterConfig as ClusterSpec
    from scnet_dask.distributed.cluster import cluster_client

    src = write_mrc(tmp_path / "v.mrc", structured((48, 64, 64)))
    ck = make_checkpoint(tmp_path / "c.pt", features=4)

    def cfg(name):
        return DenoiseConfig(input=src, checkpoint=ck, output=tmp_path / name, chunks=32,
                             device="cuda", amp=False)  # fmt: skip

    denoise(cfg("threads.zarr"), show_progress=False)
    spec = ClusterSpec(kind="local", dashboard_address=":0")
    with cluster_client(spec):
        res = denoise(cfg("cluster.zarr"), show_progress=False)
    assert res["annotations"] == {"resources": {"GPU": 1}}
    a = np.asarray(open_source(tmp_path / "threads.zarr").data)
    b = np.asarray(open_source(tmp_path / "cluster.zarr").data)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
