from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import zarr
from zarr.storage import LocalStore

from scnet_dask.commands.convert import convert
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import ConvertConfig, PriorConfig, TrainConfig
from scnet_dask.engine.run import TrainingDiverged
from scnet_dask.engine.sampling import PatchSampler, split_regions
from scnet_dask.engine.train import train
from scnet_dask.errors import InputError
from scnet_dask.methods import get
from scnet_dask.methods.base import lr_factor
from scnet_dask.methods.scnet import ScnetTrainOptions
from tests.conftest import run_cli, write_mrc


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("vol")
    rng = np.random.default_rng(1)
    z, y, x = np.mgrid[0:40, 0:64, 0:64].astype(np.float32)
    clean = (np.sin(x / 5) * np.cos(y / 7) * np.cos(z / 6)).astype(np.float32)
    noisy = clean + 0.7 * rng.standard_normal(clean.shape).astype(np.float32)
    src = write_mrc(d / "noisy.mrc", noisy, voxel=10.0)
    n = d / "noisy.zarr"
    convert(ConvertConfig(input=src, output=n, chunks=16), show_progress=False)
    p = d / "prior.zarr"
    make_prior(PriorConfig(noisy=n, output=p, sigma=1.5), show_progress=False)
    return n, p


#: A run that more epochs may continue: nothing in it spans the planned length.
_OPEN_ENDED = {"lr_schedule": "constant", "rec_warmup": 0.0}


def _cfg(n, p, out, **kw):
    base = dict(
        noisy=n,
        prior=p,
        out=out,
        patch_size=16,
        features=4,
        batch_size=2,
        epochs=2,
        steps_per_epoch=4,
        val_patches=2,
        plots=False,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_sampler_bounds_validation_and_chunk_reads(volumes, tmp_path):
    n, p = volumes
    shape = zarr.open_group(str(n))["0"].shape
    train_r, val_r = split_regions(shape, 16, 0.1)
    assert val_r is not None
    counts = {"n": 0}

    class CountingStore(LocalStore):
        async def get(self, key, *a, **k):
            if key.startswith("0/c"):
                counts["n"] += 1
            return await super().get(key, *a, **k)

    g = zarr.open_group(store=CountingStore(str(n), read_only=True), mode="r")
    stats = {"mean": 0.0, "std": 1.0}
    # two array objects (noisy and prior): the sampler reads each
    s = PatchSampler({"noisy": g["0"], "prior": zarr.open_group(store=g.store, mode="r")["0"]},
                     {"noisy": stats, "prior": stats}, 16, train_r, seed=3)  # fmt: skip
    for _ in range(50):
        origin, aug = s.draw()
        assert train_r.contains(origin, 16)
        overlaps_val = all(
            a < vb and a + 16 > va
            for a, va, vb in zip(origin, val_r.start, val_r.stop, strict=True)
        )
        assert not overlaps_val
    # a 16³ patch on 16³ chunks touches at most 8 chunks per volume (noisy and prior: 16)
    counts["n"] = 0
    origin = (3, 5, 7)
    s.read(origin, (0, 0, 0, 0, 0))
    assert counts["n"] == 2 * 8
    counts["n"] = 0
    s.read((16, 16, 16), (0, 0, 0, 0, 0))
    assert counts["n"] == 2 * 1
    s.close()


def test_augmentation_identical_for_noisy_and_prior(volumes):
    n, _ = volumes
    arr = zarr.open_group(str(n))["0"]
    stats = {"mean": 0.0, "std": 1.0}
    train_r, _ = split_regions(arr.shape, 16, 0.0)
    other = zarr.open_group(str(n))["0"]
    s = PatchSampler(
        {"noisy": arr, "prior": other}, {"noisy": stats, "prior": stats}, 16, train_r, seed=0
    )
    for _ in range(5):
        batch = s.next_batch(2)
        np.testing.assert_array_equal(batch["noisy"], batch["prior"])
    s.close()


def test_tiny_training_lowers_masked_reconstruction_loss(volumes, tmp_path):
    n, p = volumes
    out = tmp_path / "run"
    s = train(
        _cfg(
            n,
            p,
            out,
            epochs=1,
            steps_per_epoch=60,
            features=8,
            lambda_smooth=0.0,
            lambda_exp=0.0,
            lambda_reg=0.0,
            lr=2e-3,
        ),
        show_progress=False,
    )
    assert s["steps"] == 60
    with open(out / "log.csv") as f:
        rec = np.array([float(r["rec"]) for r in csv.DictReader(f)])
    assert rec[-15:].mean() < 0.8 * rec[:5].mean()
    for name in ("last.pt", "best.pt"):
        assert (out / name).exists()


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_is_bit_identical(volumes, tmp_path, monkeypatch, schedule):
    n, p = volumes
    ref = tmp_path / "ref"
    train(_cfg(n, p, ref, epochs=3, lr_schedule=schedule), show_progress=False)
    run = tmp_path / "run"
    import scnet_dask.engine.run as tr

    real = tr._Run.validate
    calls = {"n": 0}

    def killed_after_two_epochs(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(tr._Run, "validate", killed_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(n, p, run, epochs=3, lr_schedule=schedule), show_progress=False)
    monkeypatch.setattr(tr._Run, "validate", real)
    train(_cfg(n, p, run, epochs=3, resume=True, lr_schedule=schedule), show_progress=False)
    a = torch.load(ref / "last.pt", weights_only=True)["networks"]["model"]
    b = torch.load(run / "last.pt", weights_only=True)["networks"]["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (ref / "log.csv").read_text().count("\n") == (run / "log.csv").read_text().count("\n")


def test_nan_loss_stops_and_keeps_last_checkpoint(volumes, tmp_path, monkeypatch):
    n, p = volumes
    out = tmp_path / "run"
    train(_cfg(n, p, out, epochs=1, **_OPEN_ENDED), show_progress=False)
    before = (out / "last.pt").read_bytes()
    import scnet_dask.methods.scnet as tr

    real = tr.scnet_losses
    calls = {"n": 0}

    def nan_at_third(*a, **k):
        calls["n"] += 1
        terms = real(*a, **k)
        if calls["n"] == 3:
            terms["total"] = terms["total"] * float("nan")
        return terms

    monkeypatch.setattr(tr, "scnet_losses", nan_at_third)
    with pytest.raises(TrainingDiverged, match="step 7"):
        train(_cfg(n, p, out, epochs=2, resume=True, **_OPEN_ENDED), show_progress=False)
    assert (out / "last.pt").read_bytes() == before


def test_bad_training_inputs(volumes, tmp_path, capsys):
    n, p = volumes
    other = tmp_path / "other.zarr"
    write_mrc(
        tmp_path / "o.mrc", np.zeros((40, 64, 48), np.float32) + np.arange(48, dtype=np.float32)
    )
    convert(ConvertConfig(input=tmp_path / "o.mrc", output=other), show_progress=False)
    with pytest.raises(InputError, match="prior grid"):
        train(_cfg(n, other, tmp_path / "r1"), show_progress=False)
    with pytest.raises(InputError, match="larger than the volume"):
        train(_cfg(n, p, tmp_path / "r2", patch_size=64), show_progress=False)
    code, _, err = run_cli(
        ["train", n, "--prior", p, "--out", tmp_path / "r3", "--patch-size", "24"], capsys
    )
    assert code != 0 and "multiple of 16" in err
    run = tmp_path / "r4"
    run.mkdir()
    (run / "last.pt").write_bytes(b"garbage")
    with pytest.raises(InputError, match="corrupt"):
        train(_cfg(n, p, run, resume=True), show_progress=False)
    assert (run / "last.pt").read_bytes() == b"garbage"
    good = tmp_path / "r5"
    train(_cfg(n, p, good, epochs=1), show_progress=False)
    with pytest.raises(InputError, match="features"):
        train(_cfg(n, p, good, epochs=2, features=8, resume=True), show_progress=False)
    flat = tmp_path / "flat.zarr"
    write_mrc(tmp_path / "flat.mrc", np.ones((40, 64, 64), np.float32))
    convert(ConvertConfig(input=tmp_path / "flat.mrc", output=flat), show_progress=False)
    with pytest.raises(InputError, match="mask is empty"):
        train(_cfg(flat, flat, tmp_path / "r6", foreground_mask=True), show_progress=False)


def test_topaz_3d_prior_and_missing_weights(volumes, tmp_path, monkeypatch):
    pytest.importorskip("topaz")
    n, _ = volumes
    out = tmp_path / "tp.zarr"
    make_prior(
        PriorConfig(noisy=n, output=out, method="topaz-3d", tile=64, device="cpu"),
        show_progress=False,
    )
    a = zarr.open_group(str(out))["0"][:]
    src = zarr.open_group(str(n))["0"][:]
    assert a.shape == src.shape and np.isfinite(a).all()
    assert a.std() < src.std()  # smoother than the input
    # not a constant: the prior follows the input's structure (r 0.50 measured; noise std 0.7)
    assert a.std() > 0 and np.corrcoef(a.ravel(), src.ravel())[0, 1] > 0.3
    import scnet_dask.methods.topaz as pr

    pr.topaz_3d_model.cache_clear()
    monkeypatch.setitem(pr._TOPAZ_FILES, "unet-3d-10a", "missing.sav")
    with pytest.raises(InputError, match="weights"):
        make_prior(
            PriorConfig(noisy=n, output=tmp_path / "x.zarr", method="topaz-3d"), show_progress=False
        )
    assert not (tmp_path / "x.zarr").exists()
    pr.topaz_3d_model.cache_clear()


def test_rec_warmup_trains_on_rec_alone_then_ramps_in_the_prior_terms(volumes, tmp_path):
    n, p = volumes
    out = tmp_path / "run"
    train(_cfg(n, p, out, epochs=2, steps_per_epoch=10, rec_warmup=0.2), show_progress=False)
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    ramp = [float(r["ramp"]) for r in rows]
    # 20 steps, k = 4: L_rec alone until step k, a k-step linear ramp, then full weights
    assert ramp == pytest.approx([0, 0, 0, 0, 0, 0.25, 0.5, 0.75] + [1.0] * 12)
    first = rows[0]
    assert float(first["total"]) == pytest.approx(0.6 * float(first["rec"]), rel=1e-4)
    last = rows[-1]
    lam = {
        k: ScnetTrainOptions.model_fields[f"lambda_{k}"].default
        for k in ("rec", "smooth", "exp", "reg")
    }  # the defaults this run used
    full = sum(lam[k] * float(last[k]) for k in lam)
    assert float(last["total"]) == pytest.approx(full, rel=1e-4)


def test_cosine_lr_schedule_decays_from_lr_to_zero_over_the_run(volumes, tmp_path):
    n, p = volumes
    out = tmp_path / "run"
    # --lr-schedule auto (the default) is SC-Net's choice: the cosine decay
    train(_cfg(n, p, out, epochs=2, steps_per_epoch=5, lr=1e-3), show_progress=False)
    with open(out / "log.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    want = [1e-3 * 0.5 * (1 + math.cos(math.pi * s / 10)) for s in range(10)]
    assert lrs == pytest.approx(want, rel=1e-5)  # log.csv keeps 6 significant digits
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["optimizers"]["model"]["param_groups"][0]["lr"] == pytest.approx(want[-1])
    # ... and a constant rate for the methods that keep the default of the engine (n2v)
    n2v = tmp_path / "n2v"
    cfg = TrainConfig(noisy=n, out=n2v, method="n2v", patch_size=16, features=4, epochs=1,
                      steps_per_epoch=3, lr=1e-3, val_patches=0, plots=False,
                      device="cpu")  # fmt: skip
    train(cfg, show_progress=False)
    with open(n2v / "log.csv") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)] == [1e-3] * 3


def test_lr_schedule_spans():
    assert lr_factor("constant", 7, 0, 10) == 1.0
    assert lr_factor("cosine", 0, 0, 10) == 1.0
    assert lr_factor("cosine", 5, 0, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 3, 5, 10) == 1.0  # before its span: the base rate
    with pytest.raises(ValueError, match="got 'step'"):
        lr_factor("step", 0, 0, 10)
    # NMSG: the schedule drives the denoiser from the end of the GAN phase, not the GAN
    opts = SimpleNamespace(gan=SimpleNamespace(steps=30))
    spans = get("nmsg").lr_schedule_span(opts, ["model", "critic"], 100)
    assert spans == {"model": (30, 100)}
    assert get("scnet").lr_schedule_span(None, ["model"], 100) == {"model": (0, 100)}


def test_overwrite_keeps_the_earlier_run_until_the_new_one_has_work(volumes, tmp_path, monkeypatch):
    """B1: ``--overwrite`` stopped before its first checkpoint must not lose the earlier run."""
    import scnet_dask.engine.run as run_mod

    n, p = volumes
    out = tmp_path / "run"
    train(_cfg(n, p, out, epochs=1), show_progress=False)
    before = (out / "last.pt").read_bytes()

    def killed(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod._Run, "validate", killed)  # stops at the first epoch's end
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(n, p, out, epochs=1, overwrite=True), show_progress=False)
    assert (out / "previous-run" / "last.pt").read_bytes() == before
    assert (out / "previous-run" / "log.csv").exists()
    monkeypatch.undo()
    # overwriting again: the stopped run had no checkpoint, so the earlier run stays aside
    train(_cfg(n, p, out, epochs=1, overwrite=True), show_progress=False)
    assert (out / "last.pt").exists()
    assert (out / "previous-run" / "last.pt").read_bytes() == before
