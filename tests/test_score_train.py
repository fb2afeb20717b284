"""Candidates that ``score`` trains itself: region-split models, and ``auto`` delivering one.

The leakage rule for a ``train:`` candidate: each scored voxel comes from a model trained on
the other region only — checked on the real checkpoints' recorded inputs and on the assembled
output. ``denoise --method auto`` then trains the winning recipe on the whole input and keeps
the model. Real MRC/Zarr files, real training (a few steps of a tiny U-Net).
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
import zarr

from scnet_dask.commands import auto as auto_cmd
from scnet_dask.commands import score as score_mod
from scnet_dask.commands import score_train
from scnet_dask.commands.evaluate import EvaluateConfig, MethodSpec
from scnet_dask.commands.score import score
from scnet_dask.commands.score_train import check_train, region_output, split_regions
from scnet_dask.config import ScoreConfig
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.methods.loading import load_trained
from tests.conftest import run_cli, write_mrc

SHAPE = (32, 64, 48)
TINY = {"steps": 2, "patch_size": 16, "batch_size": 1, "features": 4}


@pytest.fixture
def halves(tmp_path):
    rng = np.random.default_rng(3)
    s = np.cumsum(rng.standard_normal(SHAPE), axis=2).astype(np.float32) / 8
    d = tmp_path / "h"
    d.mkdir()
    e = s + rng.standard_normal(SHAPE).astype(np.float32)
    o = s + rng.standard_normal(SHAPE).astype(np.float32)
    return (write_mrc(d / "even.mrc", e, 8.0), write_mrc(d / "odd.mrc", o, 8.0),
            write_mrc(d / "full.mrc", (e + o) / 2, 8.0))  # fmt: skip


def test_each_region_is_denoised_by_the_model_that_never_saw_it(halves, tmp_path):
    even, odd, _ = halves
    spec = MethodSpec(name="n2n", method="n2n", train=TINY)
    work, out = tmp_path / "w", tmp_path / "out.zarr"
    region_output(spec, "odd", {"even": even, "odd": odd}, None, out, work, 32, "cpu")
    axis, regions = split_regions(SHAPE, 16)
    assert axis == 1 and regions == [slice(0, 32), slice(32, 64)]
    for i, reg in enumerate(regions):  # model i trained on the even and odd halves of region i
        inputs = load_trained(str(work / f"run_{i}" / "last.pt"), "", "cpu").inputs
        assert sorted(inputs) == ["even", "odd"]
        for path in inputs.values():
            crop = open_source(path)
            assert crop.data.shape[1] == reg.stop - reg.start
            assert crop.attrs["provenance"][-1]["region"] == [1, reg.start, reg.stop]
    got = open_source(out).data.compute()
    by = [open_source(work / f"den_odd_{i}.zarr").data.compute() for i in (0, 1)]
    np.testing.assert_array_equal(got[:, :32], by[1][:, :32])  # region A by the model of B
    np.testing.assert_array_equal(got[:, 32:], by[0][:, 32:])
    assert not np.array_equal(by[0], by[1])


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ({"method": "gaussian", "sigma": 1.0, "train": {}}, "is not trained"),
        ({"method": "n2v", "train": {"odd": "x.zarr"}}, "train.odd is set by score"),
        ({"method": "n2v", "train": {"prior": "best"}}, "takes no prior"),
        ({"method": "n2v", "train": {"steps": 0}}, "train.steps must be a positive"),
        ({"method": "n2v", "train": {"patch_size": 20}}, "multiple of 16"),
        ({"method": "n2v", "train": {"nonsense": 1}}, "nonsense: not an option"),
        ({"method": "n2v", "checkpoint_even": "a.pt", "train": {}}, "not both"),
        ({"method": "supervised", "train": {}}, "cannot train supervised"),
    ],
)
def test_train_candidates_are_checked_in_one_line(item, match):
    with pytest.raises(InputError, match=match):
        check_train(MethodSpec(name="c", **item))


def test_regions_narrower_than_the_patch_and_evaluate_rows_are_refused():
    with pytest.raises(InputError, match=r"give train.patch_size <= 16"):
        split_regions((32, 40, 40), 32)
    with pytest.raises(ValueError, match="'train:' applies to score candidates only"):
        EvaluateConfig(noisy="n.mrc", out_dir="o", methods=[
            {"name": "n", "method": "n2n", "train": {}}])  # fmt: skip


def test_auto_trains_the_winning_recipe_on_the_whole_input(halves, tmp_path, capsys):
    even, odd, full = halves
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump([{"name": "identity", "method": "none"},
                                 {"name": "n2n short", "method": "n2n", "train": TINY}]))
    out = tmp_path / "auto.zarr"
    args = ["denoise", full, out, "--method", "auto", "--even", even, "--odd", odd,
            "--candidates", c, "--device", "cpu"]  # fmt: skip
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert "--method auto picked n2n short" in stdout
    prov = zarr.open_group(str(out)).attrs["scnet_dask"]["provenance"][-1]
    model = tmp_path / "auto_auto_model"
    assert prov["auto"]["model"] == str(model / "last.pt") and prov["checkpoint"].endswith(
        "auto_auto_model/last.pt")
    assert prov["auto"]["trained_on"] == {"even": str(even), "odd": str(odd)}
    # the delivered model saw the whole halves (their OME-Zarr copies), not a region's crop
    tr = load_trained(str(model / "last.pt"), "", "cpu")
    assert {k: v.split("/")[-1] for k, v in tr.inputs.items()} == {"even": "even.zarr",
                                                                   "odd": "odd.zarr"}
    assert not (tmp_path / ".auto.zarr.score").exists()
    code, _, err = run_cli(args, capsys)  # the output exists: refused before any work
    assert code == 1 and "exists" in err


def test_scnet_trains_on_the_best_scored_prior_and_is_scored_even_to_odd(
    halves, tmp_path, monkeypatch
):
    even, odd, _ = halves
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump([
        {"name": "scnet tiny", "method": "scnet", "train": {**TINY, "prior": "best"}},
        {"name": "g1", "method": "gaussian", "sigma": 1.0},
        {"name": "g4", "method": "gaussian", "sigma": 4.0},
    ]))  # fmt: skip
    made = []
    monkeypatch.setattr(score_mod, "prior_of", lambda *a: made.append(a) or a[2])
    rows = score(ScoreConfig(even=even, odd=odd, out=tmp_path / "s", candidates=c, device="cpu"))
    assert not made  # the prior is the best Gaussian's even output as scored, not a new pass
    by = {r["candidate"]: r for r in rows}
    best = min(("g1", "g4"), key=lambda n: by[n]["mse_estimate"])  # as ranked: the full level
    assert by["scnet tiny"]["prior"] == best
    assert by["scnet tiny"]["scored"] == f"region models on even (prior: {best})"
    assert "error_odd" not in by["scnet tiny"] and np.isfinite(by["scnet tiny"]["half_error"])
    # the region models also denoised the even half made noisier (the second level)
    assert np.isfinite(by["scnet tiny"]["noisier_error_fit"])
    assert by["scnet tiny"]["noisier_error_fit"] != by["scnet tiny"]["half_error_fit"]
    assert not list((tmp_path / "s" / ".score" / "train").glob("*/*"))  # runs and crops go
    assert not list((tmp_path / "s" / ".score" / "volumes").iterdir())  # the kept prior too
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([{"name": "s", "method": "scnet", "train": {"prior": "g9"}},
                                   {"name": "g1", "method": "gaussian", "sigma": 1.0}]))
    with pytest.raises(InputError, match=r"prior 'g9' is not an untrained candidate"):
        score(ScoreConfig(even=even, odd=odd, out=tmp_path / "s2", candidates=bad))


def test_a_train_candidate_resumes_after_an_error_as_if_uninterrupted(
    halves, tmp_path, monkeypatch
):
    even, odd, _ = halves
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump([{"name": "n2v tiny", "method": "n2v", "train": TINY}]))
    real = score_train.denoise
    calls = []

    def first_fails(cfg, **kw):  # the model of region A is trained; applying it fails
        calls.append(cfg.output)
        if len(calls) == 1:
            raise RuntimeError("disk full")
        return real(cfg, **kw)

    monkeypatch.setattr(score_train, "denoise", first_fails)
    cut = ScoreConfig(even=even, odd=odd, out=tmp_path / "cut", candidates=c, device="cpu")
    with pytest.raises(RuntimeError, match="disk full"):
        score(cut)
    trained = []
    real_train = score_train.train

    def counting(cfg, **kw):
        trained.append(cfg.out.name)
        return real_train(cfg, **kw)

    monkeypatch.setattr(score_train, "denoise", real)
    monkeypatch.setattr(score_train, "train", counting)
    resumed = score(cut)
    assert trained == ["run_1"]  # region A's finished model is reused, not retrained
    whole = score(ScoreConfig(even=even, odd=odd, out=tmp_path / "whole", candidates=c,
                              device="cpu"))  # fmt: skip
    assert resumed[0]["half_error"] == whole[0]["half_error"]
    assert not (tmp_path / "cut" / ".score" / "train" / "n2v_tiny").exists()


def test_auto_leaves_the_trained_candidates_out_of_halves_too_small_to_split(
    tmp_path, capsys, monkeypatch
):
    rng = np.random.default_rng(1)
    small = [write_mrc(tmp_path / f"{h}.mrc", rng.standard_normal((32, 48, 48)).astype(np.float32),
                       8.0) for h in ("e", "o")]  # fmt: skip
    seen = {}

    def stop(cfg):  # the candidates auto would score; the scoring itself is tested above
        seen["names"] = [c["name"] for c in yaml.safe_load(cfg.candidates.read_text())]
        raise InputError("stopped after choosing the candidates")

    monkeypatch.setattr(auto_cmd, "score", stop)
    args = ["denoise", small[0], tmp_path / "o.zarr", "--method", "auto", "--even", small[0],
            "--odd", small[1]]  # fmt: skip
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "stopped after choosing" in err
    assert "smaller than the training patch 32" in err and "scores the filters only" in err
    assert not any("steps" in n for n in seen["names"]) and "topaz-3d" in seen["names"]
    assert auto_cmd.auto_candidates(200)[-1]["train"]["prior"] == "best"
