"""NMSG as its authors published it: the three-term loss, the paper pairs, the 2-D synthesiser."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from scnet_dask.io import open_source
from scnet_dask.methods.loading import load_trained
from scnet_dask.methods.nmsg.method import make_pair
from scnet_dask.methods.nmsg.options import NmsgTrainOptions
from scnet_dask.model.gan import NoiseGenerator
from scnet_dask.model.gan2d import NoiseGenerator2D
from scnet_dask.model.nmsg_losses import NmsgWeights, gaussian_valid, guide_radius, nmsg_losses
from tests.conftest import run_cli
from tests.test_nmsg import _train, tomo  # noqa: F401  (the module's volume fixture)

SOBEL = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _sobel_by_hand(v: np.ndarray) -> np.ndarray:
    """|G_x| + |G_y|, the (y, x) Sobel kernels repeated over 3 z-sections, valid part."""
    kx = np.broadcast_to(SOBEL, (3, 3, 3))
    ky = np.broadcast_to(SOBEL.T, (3, 3, 3))
    gx = ndi.correlate(v, kx, mode="constant")[1:-1, 1:-1, 1:-1]
    gy = ndi.correlate(v, ky, mode="constant")[1:-1, 1:-1, 1:-1]
    return np.abs(gx) + np.abs(gy)


def test_three_term_loss_equals_a_hand_computation():
    rng = np.random.default_rng(0)
    shape = (14, 15, 16)
    out, y, prior = (rng.standard_normal(shape) for _ in range(3))
    sigma = 0.8
    r = guide_radius(sigma)
    assert r == 3  # scipy's truncation: int(4 σ + 0.5)
    g_hand = ndi.gaussian_filter(y, sigma)[r:-r, r:-r, r:-r]  # the whole-volume filter
    inner = out[r:-r, r:-r, r:-r]
    w = NmsgWeights(recon=0.7, smooth=0.05, guide=0.5)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None, None]  # noqa: E731
    g = gaussian_valid(t(y), sigma)
    np.testing.assert_allclose(g[0, 0].numpy(), g_hand, atol=1e-10)
    recon = np.mean((out - y) ** 2)
    guide = np.mean((inner - g_hand) ** 2)
    for sparsity, smooth in (
        (prior, np.mean((_sobel_by_hand(out) - _sobel_by_hand(prior)) ** 2)),
        (None, np.mean((_sobel_by_hand(inner) - _sobel_by_hand(g_hand)) ** 2)),
    ):
        got = nmsg_losses(t(out), t(y), g, None if sparsity is None else t(sparsity), w)
        np.testing.assert_allclose(float(got["recon"]), recon, rtol=1e-10)
        np.testing.assert_allclose(float(got["guide"]), guide, rtol=1e-10)
        np.testing.assert_allclose(float(got["smooth"]), smooth, rtol=1e-10)
        total = 0.7 * recon + 0.05 * smooth + 0.5 * guide
        np.testing.assert_allclose(float(got["total"]), total, rtol=1e-10)
    with pytest.raises(ValueError, match="guide must be output less 2r"):
        nmsg_losses(t(out), t(y), t(out[1:, 1:, 1:]), None, w)


@pytest.mark.parametrize("model", [NoiseGenerator(8, layers=2), NoiseGenerator2D(8, 4)])
def test_paper_pairs_target_the_patch_and_add_the_models_noise(model):
    y = torch.randn(2, 1, 8, 20, 24)
    x, target = make_pair("paper", y, model, torch.Generator().manual_seed(5))
    assert torch.equal(target, y)  # the target is the noisy patch itself, nothing added
    with torch.no_grad():
        drawn = model.sample(2, (8, 20, 24), torch.Generator().manual_seed(5))
    torch.testing.assert_close(x - y, drawn)  # the input differs by one draw of the model
    assert float(drawn.std()) > 0
    x2, t2 = make_pair("n2n", y, model, torch.Generator().manual_seed(5))
    torch.testing.assert_close(x2, x)  # the same first draw; the n2n target adds a second
    assert not torch.allclose(t2, y)
    with pytest.raises(ValueError, match="pair form"):
        make_pair("bogus", y, model, torch.Generator())


def test_pair_form_sets_the_weights_of_run_sh_unless_given():
    paper = NmsgTrainOptions(pair_form="paper")
    assert (paper.lambda_recon, paper.lambda_smooth, paper.lambda_guide) == (1.0, 0.05, 0.5)
    assert NmsgTrainOptions(pair_form="paper", lambda_guide=0).lambda_guide == 0
    default = NmsgTrainOptions()  # the authors' form is the default, with their up-sampling
    assert (default.pair_form, default.lambda_guide, default.upsample_axes) == ("paper", 0.5, "yx")
    ours = NmsgTrainOptions(pair_form="n2n")
    assert (ours.lambda_smooth, ours.lambda_guide) == (0.01, 0.0)


def test_2d_generator_tiles_each_section_with_its_own_images():
    """Section by section: every (z, tile) of a volume is one generated image, none reused."""
    gen = NoiseGenerator2D(8, 4).eval()
    with torch.no_grad():
        v = gen.sample(2, (3, 16, 20), torch.Generator().manual_seed(0))[:, 0]
        img = gen.images(2 * 3 * 2 * 3, torch.Generator().manual_seed(0))[:, 0]
    img = img.view(2, 3, 2, 3, 8, 8)  # (batch, z, tile row, tile column, 8, 8)
    raw = img.permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 16, 24)[..., :20]
    torch.testing.assert_close(v, raw - raw.mean(dim=(1, 2, 3), keepdim=True))


def test_authors_form_trains_and_denoises_through_the_cli(tomo, tmp_path, capsys):  # noqa: F811
    _, n, _, noisy = tomo
    run = tmp_path / "run"
    args = ("--epochs", "1", "--steps-per-epoch", "8", "--pair-form", "paper", "--noise-model",
            "wgan2d", "--upsample", "--upsample-axes", "yx", "--guide-sigma", "1.5")  # fmt: skip
    code, _, err = _train(n, run, capsys, *args, gan={"steps": 4}, noise_bank={"cube": 16})
    assert code == 0, err
    diag = json.loads((run / "noise_model.json").read_text())
    assert diag["noise_model"] == "wgan2d" and np.isfinite(diag["max_band_error"])
    header, *rows = (run / "log.csv").read_text().splitlines()
    assert "guide" in header.split(",") and len(rows) == 8
    ck = torch.load(run / "last.pt", weights_only=True)
    o = ck["options"]
    assert (o["pair_form"], o["upsample_axes"], o["lambda_guide"]) == ("paper", "yx", 0.5)
    # a checkpoint written before upsample_axes existed had its block on z and x
    del ck["options"]["upsample_axes"]
    torch.save(ck, tmp_path / "old.pt")
    assert load_trained(str(tmp_path / "old.pt")).options.upsample_axes == "zx"
    out = tmp_path / "den.zarr"
    code, _, err = run_cli(
        ["denoise", n, run / "last.pt", out, "--method", "nmsg", "--chunks", "32"], capsys
    )
    assert code == 0, err
    den = np.asarray(open_source(out).data)
    assert den.shape == noisy.shape and np.isfinite(den).all()
    # a wgan2d model needs images of a power-of-two edge: one line, nothing trained
    code, _, err = _train(n, tmp_path / "bad", capsys, *args, gan={"steps": 4})  # cube 12
    assert code != 0 and "power of two" in err and "12" in err
    assert not (tmp_path / "bad" / "last.pt").exists()
