from __future__ import annotations

import numpy as np
import pytest
import torch

from scnet_dask.model.blindspot import blind_spot_replace
from scnet_dask.model.checkpoint import load_checkpoint, save_checkpoint
from scnet_dask.model.losses import (
    local_means,
    loss_exp,
    loss_rec,
    loss_reg,
    loss_smooth,
    scnet_losses,
    sobel_gradient,
)
from scnet_dask.model.unet import SCNetUNet, load_public_state_dict


def test_unet_shapes_and_tile_multiple():
    for up in (True, False):
        m = SCNetUNet(features=4, upsample=up).eval()
        x = torch.randn(1, 1, 16, 32, 48)
        assert m(x).shape == x.shape
    with pytest.raises(ValueError, match="multiples of 16"):
        SCNetUNet(4)(torch.randn(1, 1, 16, 20, 16))


def test_public_checkpoint_import_with_module_prefix():
    ref = SCNetUNet(features=32)
    public = {f"module.{k}": v.clone() for k, v in ref.state_dict().items()}
    mine = SCNetUNet(features=32)
    load_public_state_dict(mine, public)
    x = torch.randn(1, 1, 16, 16, 16)
    ref.eval(), mine.eval()
    torch.testing.assert_close(mine(x), ref(x))
    # reference shape of UNet3DEM: first conv 1 -> nch_ker, last decoder conv nch_ker -> 1
    assert public["module.enc1_1.0.weight"].shape == (32, 1, 3, 3, 3)
    assert public["module.dec1_1.3.weight"].shape == (1, 32, 3, 3, 3)
    with pytest.raises(ValueError, match="shape"):
        load_public_state_dict(SCNetUNet(features=16), public)


def test_sobel_hand_computed():
    # a ramp along x with slope 1: G_x response is (1+2+1) * 2 per z-plane, 3 planes -> 24
    x = torch.arange(5.0).expand(5, 5, 5).clone()[None, None]
    g = sobel_gradient(x)
    assert g.shape == (1, 1, 3, 3, 3)
    torch.testing.assert_close(g, torch.full_like(g, 24.0))
    y = x.transpose(3, 4)  # ramp along y
    torch.testing.assert_close(sobel_gradient(y), torch.full_like(g, 24.0))


def test_losses_hand_computed():
    out = torch.zeros(1, 1, 5, 5, 5)
    noisy = torch.ones(1, 1, 5, 5, 5)
    mask = torch.zeros_like(out)
    mask[0, 0, 0, 0, :2] = 1
    assert float(loss_rec(out, noisy, mask)) == pytest.approx(1.0)
    assert float(loss_rec(out, noisy, mask, "unreplaced")) == pytest.approx(123 / 125)
    prior = torch.arange(5.0).expand(5, 5, 5).clone()[None, None]
    assert float(loss_smooth(out, prior)) == pytest.approx(24.0**2)
    assert float(loss_reg(prior)) == pytest.approx(24.0)
    assert float(local_means(prior).squeeze()) == pytest.approx(2.0)
    assert float(loss_exp(out, prior)) == pytest.approx(4.0)
    terms = scnet_losses(out, noisy, prior, mask)
    expected = 0.6 * 1.0 + 0.1 * 576.0 + 0.2 * 4.0 + 0.01 * 0.0
    assert float(terms["total"]) == pytest.approx(expected)


def test_blind_spot_ratio_window_mask_and_seed():
    torch.manual_seed(0)
    x = torch.randn(24, 24, 24)
    g = torch.Generator().manual_seed(5)
    out, mask = blind_spot_replace(x, ratio=0.01, generator=g)
    # the mask marks exactly the changed voxels (values are continuous: no accidental equality)
    changed = out != x
    assert torch.equal(changed, mask.bool())
    # the number of regions: round(0.01 * 24**3) = 138 regions of 27 voxels, overlaps allowed
    n_regions = round(0.01 * x.numel())
    assert 0.6 * n_regions * 27 < mask.sum() <= n_regions * 27
    # every replaced value comes from within one voxel (shift) of its position, so inside the
    # 5³ window of its region's centre
    idx = torch.nonzero(mask.bool())
    pad = torch.nn.functional.pad(x[None, None], (1, 1, 1, 1, 1, 1), value=float("nan"))[0, 0]
    for z, y, xx in idx[:500].tolist():
        neigh = pad[z : z + 3, y : y + 3, xx : xx + 3]
        assert bool((neigh == out[z, y, xx]).any())
    # never within window//2 of the border... regions reach margin - 1 at most
    assert mask[0].sum() == 0 and mask[:, :, -1].sum() == 0
    g2 = torch.Generator().manual_seed(5)
    out2, mask2 = blind_spot_replace(x, ratio=0.01, generator=g2)
    assert torch.equal(out, out2) and torch.equal(mask, mask2)
    prior = torch.randn(24, 24, 24)
    outc, maskc = blind_spot_replace(x, prior, ratio=0.01, mode="cross", generator=g2)
    vals = outc[maskc.bool()]
    assert torch.isin(vals, prior).all()
    with pytest.raises(ValueError, match="cross"):
        blind_spot_replace(x, None, mode="cross")


def test_checkpoint_roundtrip_and_corruption(tmp_path):
    m = SCNetUNet(4)
    p = tmp_path / "c.pt"
    save_checkpoint(
        p, {"model": m.state_dict(), "config": {"features": 4}, "normalisation": {"mean": 1.0}}
    )
    data = load_checkpoint(p)
    assert data["format_version"] == 2 and data["config"]["features"] == 4
    p.write_bytes(p.read_bytes()[:100])
    from scnet_dask.errors import InputError

    with pytest.raises(InputError, match="corrupt"):
        load_checkpoint(p)
    np.testing.assert_equal(list(tmp_path.iterdir()), [p])  # no temporary left behind
