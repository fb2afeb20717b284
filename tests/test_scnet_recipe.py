"""SC-Net's training must add to its prior: a short run beats both its input and its prior."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scnet_dask.commands.convert import convert
from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import ConvertConfig, DenoiseConfig, PriorConfig, TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.io import open_source
from tests.conftest import write_mrc


def _r(a: object, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=np.float64).ravel(), b.ravel())[0, 1])


@pytest.mark.slow  # a quality margin (+0.01 in r over the prior), not a unit check
def test_training_beats_the_input_and_the_prior(tmp_path):
    """Blobs of σ 1.5 voxels plus white noise of their std; prior = an over-smoothed Gaussian
    (σ 2) of the noisy volume. An output that only copied the prior would tie with it; the
    blind-spot term must add the detail the prior lost."""
    rng = np.random.default_rng(0)
    shape = (32, 64, 64)
    clean = ndimage.gaussian_filter((rng.random(shape) < 0.01).astype(np.float32), 1.5)
    clean /= clean.std()
    noisy = (clean + rng.standard_normal(shape)).astype(np.float32)
    write_mrc(tmp_path / "n.mrc", noisy, voxel=10.0)
    n, p = tmp_path / "n.zarr", tmp_path / "p.zarr"
    convert(ConvertConfig(input=tmp_path / "n.mrc", output=n, chunks=32), show_progress=False)
    make_prior(PriorConfig(noisy=n, output=p, sigma=2.0), show_progress=False)
    train(
        TrainConfig.model_validate({
            "noisy": n, "prior": p, "out": tmp_path / "run", "patch_size": 32, "features": 8,
            "epochs": 1, "steps_per_epoch": 100, "val_patches": 0, "device": "cpu",
            "plots": False,
        }),
        show_progress=False,
    )  # fmt: skip
    out = tmp_path / "d.zarr"
    denoise(
        DenoiseConfig(input=n, checkpoint=tmp_path / "run" / "last.pt", output=out, chunks=64,
                      device="cpu"),
        show_progress=False,
    )  # fmt: skip
    r_noisy, r_prior = _r(noisy, clean), _r(open_source(p).data, clean)
    r_out = _r(open_source(out).data, clean)
    assert r_noisy == pytest.approx(0.71, abs=0.02) and r_prior > r_noisy + 0.1
    assert r_out > r_prior + 0.01, (r_noisy, r_prior, r_out)
