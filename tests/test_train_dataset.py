"""``train --dataset``: one model on many tomograms of a dataset. Real MRC files on disk.

The sampler draws tomograms in proportion to their volume and never holds more than
``--open-tomograms`` open; ``--resume`` after a kill or an error is bit-identical; the run
folder records the tomograms; voxel-size outliers are warned about or refused; methods that
cannot train on a dataset say why.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import dask.array as da
import mrcfile
import numpy as np
import pytest
import torch
from dask_image.ndfilters import gaussian_filter
from distributed import Client, LocalCluster
from scipy import stats as sps

from scnet_dask.config import TrainConfig
from scnet_dask.distributed.ddp import train_distributed
from scnet_dask.engine import multi_sampler
from scnet_dask.engine import run as run_mod
from scnet_dask.engine.dataset_inputs import DEFAULT_MAX, choose_tomograms, prepare_dataset
from scnet_dask.engine.dataset_readers import GaussianPrior
from scnet_dask.engine.dataset_run import dataset_inputs
from scnet_dask.engine.train import train
from scnet_dask.errors import InputError
from scnet_dask.io.dataset import Dataset, Tomogram
from scnet_dask.methods import get
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import structured

#: Four tomograms of different shapes (z, y, x).
SHAPES = [(16, 32, 48), (32, 32, 32), (16, 48, 64), (24, 40, 32)]


def _dataset(root: Path, shapes=SHAPES, halves: bool = False, voxels=None) -> Path:
    """An AreTomo3 folder (with halves) or a plain folder of MRC volumes."""
    root.mkdir(parents=True, exist_ok=True)
    for i, shape in enumerate(shapes):
        v = structured(shape, seed=i)
        vx = 10.0 if voxels is None else voxels[i]
        if halves:
            n = 0.3 * structured(shape, seed=100 + i)
            write_mrc(root / f"TS_{i}_Vol.mrc", v, vx)
            write_mrc(root / f"TS_{i}_EVN_Vol.mrc", v + n, vx)
            write_mrc(root / f"TS_{i}_ODD_Vol.mrc", v - n, vx)
        else:
            write_mrc(root / f"TS_{i}.mrc", v, vx)
    return root


def _cfg(source: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        dataset=str(source), out=out, method="n2n", patch_size=16, features=4, batch_size=2,
        epochs=3, steps_per_epoch=3, val_patches=2, plots=False, device="cpu",
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_patches_follow_volume_proportions_and_the_pool_stays_bounded(tmp_path):
    src = _dataset(tmp_path / "ds")
    cfg = _cfg(src, tmp_path / "run", method="n2v", val_patches=0, open_tomograms=2)
    (tmp_path / "run").mkdir()
    prepare_dataset(cfg)
    d = dataset_inputs(cfg, get("n2v"), (16, 16, 16), rank=0)
    s = d.sampler
    draws = [s.draw() for _ in range(2000)]
    counts = np.bincount([i for (i, _), _ in draws], minlength=4)
    volume = np.array([np.prod(sh) for sh in SHAPES], dtype=float)
    assert sps.chisquare(counts, 2000 * volume / volume.sum()).pvalue > 0.01
    # the test can fail: the same draws are far from equal probabilities
    assert sps.chisquare(counts, np.full(4, 500.0)).pvalue < 1e-6
    for (i, origin), _ in draws:  # every patch inside its own tomogram
        assert all(0 <= o and o + 16 <= n for o, n in zip(origin, SHAPES[i], strict=True))
    s.reset_queue()
    for _ in range(40):  # reads through the prefetching queue, 4 patches a batch
        batch = s.next_batch(4)
        assert batch["noisy"].shape == (4, 1, 16, 16, 16)
        assert s.pool.held <= 2
    assert s.pool.peak <= 2 and s.pool.opens > 2  # bounded, and it did rotate
    s.close()


def test_gaussian_prior_view_equals_the_prior_command(tmp_path):
    v = structured((20, 24, 28), seed=3).astype(np.float32)
    lazy = da.from_array(v, chunks=(7, 10, 9))  # as 'prior --method gaussian': Dask blocks
    whole = gaussian_filter(lazy, sigma=1.5, mode="reflect").compute()
    view = GaussianPrior(v, 1.5)
    for box in [(slice(0, 8), slice(3, 19), slice(20, 28)), (slice(6, 14),) * 3]:
        np.testing.assert_allclose(view[box], whole[box], rtol=1e-5, atol=1e-6)


def test_resume_after_a_kill_or_an_error_is_bit_identical(tmp_path, monkeypatch):
    src = _dataset(tmp_path / "ds", SHAPES[:3], halves=True)
    ref = tmp_path / "ref"
    train(_cfg(src, ref, val_tomograms="TS_2"), show_progress=False)

    real_validate = run_mod._Run.validate
    calls = {"n": 0}

    def killed_at_second_epoch_end(self, patches=None):
        calls["n"] += 1
        if calls["n"] == 3:  # the held-back slabs, then TS_2, then epoch 2's slabs
            raise KeyboardInterrupt
        return real_validate(self, patches)

    killed = tmp_path / "killed"
    monkeypatch.setattr(run_mod._Run, "validate", killed_at_second_epoch_end)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(src, killed, val_tomograms="TS_2"), show_progress=False)
    monkeypatch.setattr(run_mod._Run, "validate", real_validate)

    real_read = multi_sampler.MultiSampler.read
    reads = {"n": 0}

    def failing_read(self, key, aug, names=None):
        reads["n"] += 1
        if reads["n"] >= 16:  # read errors from the second epoch on
            raise OSError("disk went away")
        return real_read(self, key, aug, names)

    failed = tmp_path / "failed"
    monkeypatch.setattr(multi_sampler.MultiSampler, "read", failing_read)
    with pytest.raises(OSError, match="disk went away"):
        train(_cfg(src, failed, val_tomograms="TS_2"), show_progress=False)
    monkeypatch.setattr(multi_sampler.MultiSampler, "read", real_read)

    ref_w = torch.load(ref / "last.pt", weights_only=True)["networks"]["model"]
    for run in (killed, failed):
        train(_cfg(src, run, val_tomograms="TS_2", resume=True), show_progress=False)
        w = torch.load(run / "last.pt", weights_only=True)["networks"]["model"]
        for k in ref_w:
            assert torch.equal(ref_w[k], w[k]), (run.name, k)
        assert (run / "log.csv").read_text() .count("\n") == 10  # header + 9 steps
    with open(ref / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["val_TS_2"] != "" for r in rows] == [False, False, True] * 3
    assert all(float(r["val"]) > 0 for r in rows if r["val"])


def test_run_folder_records_tomograms_and_denoise_uses_own_statistics(tmp_path, capsys):
    src = _dataset(tmp_path / "ds", SHAPES[:2])
    out = tmp_path / "run"
    train(_cfg(src, out, method="scnet", epochs=1, val_patches=1), show_progress=False)
    rec = json.loads((out / "dataset.json").read_text())
    assert [e["name"] for e in rec["training"]] == ["TS_0", "TS_1"]
    assert all(e["signature"] and e["norm"]["prior"][1] > 0 for e in rec["training"])
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["normalisation"]["noisy"]["per_tomogram"] is True
    assert [n for n, _ in ck["input_signatures"]["dataset"]] == ["TS_0", "TS_1"]
    assert ck["provenance"]["dataset"] == str(src)
    # a tomogram in other units is normalised by its own statistics, as in training
    v = structured(SHAPES[0], seed=0)
    write_mrc(tmp_path / "a.mrc", v, 10.0)
    write_mrc(tmp_path / "b.mrc", 100 * v + 500, 10.0)
    for name in ("a", "b"):
        code, _, err = run_cli(["denoise", tmp_path / f"{name}.mrc", out / "last.pt",
                                tmp_path / f"{name}_den.mrc", "--method", "scnet"], capsys)
        assert code == 0, err
        assert "unlike" not in err
    with mrcfile.open(tmp_path / "a_den.mrc") as a, mrcfile.open(tmp_path / "b_den.mrc") as b:
        np.testing.assert_allclose(b.data, 100 * a.data + 500, rtol=1e-3, atol=0.05)


def test_voxel_size_outliers_are_warned_about_or_refused(tmp_path, capsys):
    src = _dataset(tmp_path / "ds", SHAPES[:3], voxels=[10.0, 10.2, 13.0])
    args = ["train", "--dataset", src, "--method", "n2v", "--patch-size", "16", "--features",
            "4", "--epochs", "1", "--steps-per-epoch", "1", "--no-plots", "--device", "cpu"]
    code, _, err = run_cli([*args, "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert "TS_2 (13x13x13 Å)" in err and "TS_1 (" not in err  # 2 % off the median: fine
    out = tmp_path / "strict"
    code, _, err = run_cli([*args, "--out", out, "--strict-voxel-size"], capsys)
    assert code != 0 and "differ from the median" in err and "TS_2" in err
    assert "(--strict-voxel-size)" in err
    assert not out.exists()  # nothing left behind


def test_training_tomograms_are_chosen_evenly_and_deterministically(tmp_path):
    ds = Dataset("src", "glob", [Tomogram(f"T{i:03d}", Path(f"T{i:03d}.mrc")) for i in range(40)])
    pick = lambda **kw: [t.name for t in choose_tomograms(ds, _cfg(Path("s"), tmp_path, **kw))[0]]  # noqa: E731
    four = pick(train_count=4)
    assert four == pick(train_count=4) and len(set(four)) == 4
    gaps = np.diff([int(n[1:]) for n in four])
    assert gaps.min() >= 9 and gaps.max() <= 11  # spread over the dataset
    assert len(pick()) == DEFAULT_MAX
    assert "T005" not in pick(train_count=39, val_tomograms="T005")
    assert pick(tomograms="T001,T002") == ["T001", "T002"]
    with pytest.raises(InputError, match="both in --tomograms and --val-tomograms"):
        pick(tomograms="T001,T002", val_tomograms="T002")
    with pytest.raises(InputError, match="--train-count 41 but only 40"):
        pick(train_count=41)


def test_cli_refusals_are_one_line(tmp_path, capsys):
    src = _dataset(tmp_path / "ds", SHAPES[:2])
    cases = [
        (["--method", "fourier-n2n"], "trains on one volume, not --dataset"),
        (["--method", "scnet", "--prior", str(tmp_path / "p.zarr")], "--prior names one volume"),
        (["--method", "n2n"], "has no even/odd halves"),
        (["--method", "n2v", "--tomograms", "TS_9"], "no tomogram named 'TS_9'"),
    ]
    for extra, message in cases:
        out = tmp_path / "run"
        code, _, err = run_cli(["train", "--dataset", src, "--out", out, "--patch-size", "16",
                                "--epochs", "1", *extra], capsys)  # fmt: skip
        assert code != 0 and message in err, (extra, err)
        assert not out.exists()
    code, _, err = run_cli(["train", src / "TS_0.mrc", "--dataset", src, "--out",
                            tmp_path / "r"], capsys)  # fmt: skip
    assert code != 0 and "give a NOISY volume or --dataset SOURCE, got both" in err
    code, _, err = run_cli(["train", src / "TS_0.mrc", "--train-count", "2", "--out",
                            tmp_path / "r"], capsys)  # fmt: skip
    assert code != 0 and "--train-count applies to --dataset only" in err


@pytest.mark.cluster
def test_ddp_on_a_dataset_keeps_replicas_identical(tmp_path):
    src = _dataset(tmp_path / "ds", SHAPES[:3], halves=True)
    out = tmp_path / "run"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                     dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        s = train_distributed(_cfg(src, out, epochs=2, val_tomograms="TS_2"), client)
    assert s["world"] == 2 and len(set(s["replica_sha256"])) == 1
    with open(out / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[-1]["val_TS_2"] != ""  # rank 0 logs every step
    rec = json.loads((out / "dataset.json").read_text())
    assert [e["name"] for e in rec["training"]] == ["TS_0", "TS_1"]


def test_foreground_mask_weights_and_places_patches(tmp_path):
    """Half of TS_1 is empty (constant): its weight and its patch centres leave that half out."""
    src = tmp_path / "ds"
    src.mkdir()
    write_mrc(src / "TS_0.mrc", structured((32, 32, 32), seed=0), 10.0)
    half = structured((32, 32, 64), seed=1)
    half[:, :, 32:] = 0.0
    write_mrc(src / "TS_1.mrc", half, 10.0)
    out = tmp_path / "run"
    train(_cfg(src, out, method="s2s", foreground_mask=True, epochs=1, steps_per_epoch=2,
               val_patches=0), show_progress=False)  # fmt: skip
    rec = json.loads((out / "dataset.json").read_text())
    w0, w1 = (e["weight"] for e in rec["training"])
    # weights count the centres where a 16³ patch fits: 17³ in TS_0; in TS_1 without a mask
    # 17 x 17 x 49, with it about half of that (the empty half left out)
    assert (out / "masks" / "TS_1.npy").exists() and w0 == 17**3
    assert 0.4 * 17 * 17 * 49 < w1 < 0.6 * 17 * 17 * 49
    cfg = _cfg(src, out, method="s2s", foreground_mask=True, val_patches=0, resume=True)
    d = dataset_inputs(cfg, get("s2s"), (16, 16, 16), rank=0)
    xs = [origin[2] + 8 for (i, origin), _ in (d.sampler.draw() for _ in range(300)) if i == 1]
    assert len(xs) > 50 and max(xs) <= 34  # centres in the structured half (mask edge: 1 voxel)
    d.sampler.close()
