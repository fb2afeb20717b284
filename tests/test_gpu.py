"""GPU paths: run with ``python -m pytest -m gpu`` on a machine with CUDA; skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scnet_dask.config import DenoiseConfig
from scnet_dask.denoise import denoise
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
