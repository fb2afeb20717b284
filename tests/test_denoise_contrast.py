"""A trained model whose output anti-correlates with its input is named in a warning.

NMSG's authors' loss fixes no sign and can end with an inverted contrast at exit 0 (measured
on three benchmark rows). Here a real n2v checkpoint's last layer is negated — the network's
output inverted — and ``denoise`` must warn with the correlation; the model as trained must not.
"""

from __future__ import annotations

import numpy as np
import torch

from scnet_dask.config import TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.model.checkpoint import networks_sha256
from tests.conftest import run_cli, write_mrc


def test_an_inverted_model_output_is_named_in_a_warning(tmp_path, capsys):
    rng = np.random.default_rng(5)
    s = np.cumsum(rng.standard_normal((32, 48, 48)), axis=2).astype(np.float32) / 6
    mrc = write_mrc(tmp_path / "n.mrc", s + rng.standard_normal(s.shape).astype(np.float32), 8.0)
    zarr_in = tmp_path / "n.zarr"
    assert run_cli(["convert", mrc, zarr_in], capsys)[0] == 0
    run = tmp_path / "run"
    train(TrainConfig(noisy=zarr_in, out=run, method="n2v", patch_size=16, features=4,
                      epochs=1, steps_per_epoch=20, val_patches=0, plots=False, device="cpu"),
          show_progress=False)  # fmt: skip
    ck = torch.load(run / "last.pt", weights_only=False, map_location="cpu")
    weights = ck["networks"]["model"]
    last = [k for k in weights if k.endswith(".weight")][-1]
    for k in (last, last.replace(".weight", ".bias")):
        weights[k] = -weights[k]
    ck["networks_sha256"] = networks_sha256(ck["networks"])  # a consistent file, not damage
    torch.save(ck, tmp_path / "inverted.pt")
    for name, warned in (("last.pt", False), ("inverted.pt", True)):
        path = run / name if name == "last.pt" else tmp_path / name
        code, _, err = run_cli(["denoise", zarr_in, path, tmp_path / f"{name}.zarr", "--method",
                                "n2v", "--device", "cpu"], capsys)  # fmt: skip
        assert code == 0, err
        assert ("anti-correlates with its input (r = -" in err) == warned, err
