"""``score``: ranking candidates by their error against the other half, without ground truth.

Synthetic signal + independent Gaussian noise per half (frame-split halves): the identity's
score is the halves' MSE; a Gaussian σ grid is ranked as the true MSE of the full volume ranks
it and the implied PSNRs (of a half, of the full volume) are within 0.3 dB of the true ones; a
trained candidate that may have seen the scoring half's noise is refused. Real files on disk
throughout.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml
import zarr
from scipy import ndimage

from scnet_dask.commands import score as score_cmd
from scnet_dask.commands import score_train
from scnet_dask.config import ScoreConfig, TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import structured
from tests.test_noise2noise import run_cli_ok

SHAPE = (64, 128, 128)  # 1 M voxels: the error of the PSNR estimate falls as 1/√N
NOISE = 0.5


def _make_halves(d, shape):
    s = structured(shape, seed=4).astype(np.float32)
    s = ndimage.gaussian_filter(s, 1.5)
    s = (s - s.mean()) / s.std()
    rng = np.random.default_rng(0)
    e = s + NOISE * rng.standard_normal(shape).astype(np.float32)
    o = s + NOISE * rng.standard_normal(shape).astype(np.float32)
    d.mkdir()
    return s, write_mrc(d / "even.mrc", e, 10.0), write_mrc(d / "odd.mrc", o, 10.0), e, o


@pytest.fixture
def halves(tmp_path):
    return _make_halves(tmp_path / "halves", SHAPE)


@pytest.fixture
def small_halves(tmp_path):
    return _make_halves(tmp_path / "small", (32, 48, 48))


def _candidates(path, items):
    path.write_text(yaml.safe_dump(items, allow_unicode=True))
    return path


def test_identity_scores_the_halves_mse(small_halves, tmp_path):
    _, even, odd, e, o = small_halves
    c = _candidates(tmp_path / "c.yaml", [{"name": "identity", "method": "none"}])
    rows = score_cmd.score(ScoreConfig(even=even, odd=odd, out=tmp_path / "s", candidates=c))
    mse = float(np.mean((e.astype(np.float64) - o) ** 2))
    assert rows[0]["half_error"] == pytest.approx(mse, rel=1e-6)
    # after the best scale and offset of one half against the other, both directions
    x, y = e.astype(np.float64).ravel(), o.astype(np.float64).ravel()
    cov = np.cov(x, y, bias=True)[0, 1]
    fitted = (y.var() - cov**2 / x.var() + x.var() - cov**2 / y.var()) / 2
    assert rows[0]["half_error_fit"] == pytest.approx(fitted, rel=1e-5)
    assert rows[0]["half_mse_estimate"] == pytest.approx(fitted - mse / 2, rel=1e-4)
    # once more with a second half's noise: the halves' difference shifted by half the grid
    # along the longer in-plane axis (x on a tie), times √2; even→odd
    n = np.sqrt(2) * np.roll((e.astype(np.float64) - o) / 2, e.shape[1] // 2, axis=1)
    z = (e + n).ravel()
    cov2 = np.cov(z, y, bias=True)[0, 1]
    assert rows[0]["noisier_error_fit"] == pytest.approx(y.var() - cov2**2 / z.var(), rel=1e-4)
    # each moment extrapolated linearly in the noise variance to the full volume's level
    var_f = (x.var() + y.var()) / 2 - (z.var() - x.var()) / 2
    c = cov - (cov2 - cov) / 2
    full = (x.var() + y.var()) / 2 - c**2 / var_f - mse / 2
    assert rows[0]["mse_estimate"] == pytest.approx(full, rel=1e-4)


def test_gaussian_grid_is_ranked_as_the_true_error_and_psnr_is_close(halves, tmp_path):
    s, even, odd, e, o = halves
    sigmas = [0.5, 1.0, 1.5, 2.0, 3.0]
    c = _candidates(tmp_path / "c.yaml", [
        {"name": f"g{x}", "method": "gaussian", "sigma": x} for x in sigmas
    ])  # fmt: skip
    rows = score_cmd.score(ScoreConfig(even=even, odd=odd, out=tmp_path / "s", candidates=c))
    _, rng = score_cmd.half_noise(even, odd)
    true, true_half = {}, {}
    ref = s.astype(np.float64).ravel()

    def err(v, x):  # the true error of an output against the clean signal, fitted
        g = ndimage.gaussian_filter(v, x, mode="reflect").astype(np.float64).ravel()
        return ref.var() - np.cov(g, ref, bias=True)[0, 1] ** 2 / g.var()

    for x in sigmas:  # each half's output (what was measured), the full volume's (delivered)
        true_half[f"g{x}"] = 10 * np.log10(rng * rng / np.mean([err(h, x) for h in (e, o)]))
        true[f"g{x}"] = 10 * np.log10(rng * rng / err((e + o) / 2, x))
    ranked = [r["candidate"] for r in rows]
    assert ranked == sorted(true, key=lambda k: -true[k])
    assert true[ranked[0]] - true[ranked[-1]] > 1.0  # a ranking with something to rank
    # the levels rank differently (σ 1 gains most from the lower noise): a ranking at a
    # half's level would fail the first assertion
    assert sorted(true_half, key=lambda k: -true_half[k]) != ranked
    for r in rows:
        assert r["psnr_half_estimate"] == pytest.approx(true_half[r["candidate"]], abs=0.3)
        assert r["psnr_estimate"] == pytest.approx(true[r["candidate"]], abs=0.3)
    with open(tmp_path / "s" / "score.csv", newline="") as f:
        assert [r["candidate"] for r in csv.DictReader(f)] == ranked  # best first
    assert (tmp_path / "s" / "slices.png").stat().st_size > 0
    # the noisier half is a work volume: gone with the candidates' volumes
    assert not list((tmp_path / "s" / ".score").glob("noisier_*"))


def test_trained_candidates_must_not_have_seen_the_scoring_half(small_halves, tmp_path, capsys):
    _, even_mrc, odd_mrc, _, _ = small_halves
    even, odd = tmp_path / "even.zarr", tmp_path / "odd.zarr"
    for src, dst in ((even_mrc, even), (odd_mrc, odd)):
        assert run_cli_ok(["convert", src, dst, "--chunks", "32"])
    run = tmp_path / "run_even"
    train(TrainConfig(noisy=even, out=run, method="n2v", patch_size=16, features=4, epochs=1,
                      steps_per_epoch=2, val_patches=0, plots=False, device="cpu"),
          show_progress=False)  # fmt: skip
    ck = run / "last.pt"
    out = tmp_path / "s"
    # a model trained on the even half, applied to it and scored against the odd half: fine
    ok = _candidates(tmp_path / "ok.yaml", [{"name": "n2v", "method": "n2v",
                                             "checkpoint_even": str(ck)}])  # fmt: skip
    rows = score_cmd.score(ScoreConfig(even=even, odd=odd, out=out, candidates=ok))
    assert rows[0]["scored"] == "last.pt on even" and np.isfinite(rows[0]["half_error"])
    # the same model offered as the odd half's: it saw the even half's noise -> refused
    bad = _candidates(tmp_path / "bad.yaml", [{"name": "n2v", "method": "n2v",
                                               "checkpoint_even": str(ck),
                                               "checkpoint_odd": str(ck)}])  # fmt: skip
    with pytest.raises(InputError, match=r"trained on noisy=.*even.zarr, not on .*odd.zarr alone"):
        score_cmd.score(ScoreConfig(even=even, odd=odd, out=out, candidates=bad))
    # a model given as 'checkpoint' (it may hold both halves) is refused, one line, exit 1
    whole = _candidates(tmp_path / "w.yaml", [{"name": "n2v", "method": "n2v",
                                               "checkpoint": str(ck)}])  # fmt: skip
    code, _, err = run_cli(["score", even, odd, "--out", out, "--candidates", whole], capsys)
    assert code == 1 and "may have seen both halves' noise" in err


def test_cli_writes_tables_and_a_rerun_resumes(small_halves, tmp_path, capsys, monkeypatch):
    _, even, odd, _, _ = small_halves
    c = _candidates(tmp_path / "c.yaml", [{"name": "identity", "method": "none"},
                                          {"name": "g1", "method": "gaussian", "sigma": 1.0}])
    out = tmp_path / "s"
    code, stdout, err = run_cli(["score", even, odd, "--out", out, "--candidates", c], capsys)
    assert code == 0, err
    assert "best: g1" in stdout and (out / "score.md").exists()

    def no_denoise(*a, **k):
        raise AssertionError("a finished candidate was denoised again")

    monkeypatch.setattr(score_train, "denoise", no_denoise)  # every candidate's denoise
    code, stdout, err = run_cli(["score", even, odd, "--out", out, "--candidates", c], capsys)
    assert code == 0, err
    assert not list((out / ".score" / "volumes").iterdir())  # volumes are not kept


def test_denoise_auto_delivers_the_best_scored_candidate(small_halves, tmp_path, capsys):
    _, even, odd, e, o = small_halves
    full = write_mrc(tmp_path / "full.mrc", (e + o) / 2, 10.0)
    c = _candidates(tmp_path / "c.yaml", [
        {"name": "identity", "method": "none"},
        *({"name": f"g{x}", "method": "gaussian", "sigma": x} for x in (0.5, 1.0, 3.0)),
    ])  # fmt: skip
    out = tmp_path / "auto.zarr"
    code, stdout, err = run_cli(["denoise", full, out, "--method", "auto", "--even", even,
                                 "--odd", odd, "--candidates", c], capsys)  # fmt: skip
    assert code == 0, err
    rows = score_cmd.score(ScoreConfig(even=even, odd=odd, out=tmp_path / "s", candidates=c))
    best = next(r for r in rows if r["method"] != "none")["candidate"]
    assert f"--method auto picked {best}" in stdout
    prov = zarr.open_group(str(out)).attrs["scnet_dask"]["provenance"][-1]
    assert prov["method"] == "gaussian" and prov["auto"]["picked"] == best
    assert [r["candidate"] for r in prov["auto"]["score"]] == [r["candidate"] for r in rows]
    ref = tmp_path / "ref.zarr"
    sigma = {"g0.5": "0.5", "g1.0": "1.0", "g3.0": "3.0"}[best]
    assert run_cli(["denoise", full, ref, "--method", "gaussian", "--sigma", sigma], capsys)[0] == 0
    np.testing.assert_array_equal(open_source(out).data.compute(), open_source(ref).data.compute())
    assert not (tmp_path / ".auto.zarr.score").exists()  # the work folder goes once done
    code, _, err = run_cli(["denoise", full, tmp_path / "x.zarr", "--method", "auto"], capsys)
    assert code == 1 and "--method auto needs --even and --odd" in err


def test_score_dataset_scores_each_tomogram_with_halves_and_summarises(tmp_path, capsys):
    """AreTomo3 folder: two tomograms with halves are scored, one without is named and skipped."""
    root = tmp_path / "session"
    root.mkdir()
    shape = (32, 48, 48)
    for i, noise in ((1, 0.3), (2, 1.0)):  # the best σ differs with the noise level
        s = ndimage.gaussian_filter(structured(shape, seed=i).astype(np.float32), 1.5)
        s = (s - s.mean()) / s.std()
        rng = np.random.default_rng(i)
        for tag in ("EVN", "ODD"):
            half = (s + noise * rng.standard_normal(shape)).astype(np.float32)
            write_mrc(root / f"TS_{i}_{tag}_Vol.mrc", half, 10.0)
        write_mrc(root / f"TS_{i}_Vol.mrc", s, 10.0)
    write_mrc(root / "TS_3_Vol.mrc", np.zeros(shape, np.float32), 10.0)  # no halves
    c = _candidates(tmp_path / "c.yaml", [{"name": "identity", "method": "none"}, *(
        {"name": f"g{x}", "method": "gaussian", "sigma": x} for x in (0.5, 1.5))])  # fmt: skip
    out = tmp_path / "s"
    code, text, err = run_cli(
        ["score", "--dataset", root, "--out", out, "--candidates", c, "--chunks", "32"], capsys
    )
    assert code == 0, err
    assert "TS_3" in err and "without halves" in err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["TS_1", "TS_2"]
    for name in ("TS_1", "TS_2"):  # each tomogram scored as `score EVEN ODD` would
        one = ScoreConfig(even=root / f"{name}_EVN_Vol.mrc", odd=root / f"{name}_ODD_Vol.mrc",
                          out=tmp_path / f"one_{name}", candidates=c)  # fmt: skip
        single = score_cmd.score(one)
        with open(out / name / "score.csv", newline="") as f:
            got = list(csv.DictReader(f))
        assert [r["candidate"] for r in got] == [r["candidate"] for r in single]
    with open(out / "score.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert {r["candidate"] for r in summary} == {"identity", "g0.5", "g1.5"}
    assert sum(int(r["wins"]) for r in summary) == 2 and summary[-1]["candidate"] == "identity"
    assert "of 2" in (out / "score.md").read_text()
    # one tomogram of the two (--count), and a trained candidate refused in one line
    code, _, err = run_cli(["score", "--dataset", root, "--out", tmp_path / "k", "--candidates",
                            c, "--count", "1", "--chunks", "32"], capsys)  # fmt: skip
    assert code == 0, err
    assert len([p for p in (tmp_path / "k").iterdir() if p.is_dir()]) == 1
    t = _candidates(tmp_path / "t.yaml", [{"name": "n", "method": "n2v",
                                           "checkpoint_even": "x.pt"}])  # fmt: skip
    code, _, err = run_cli(["score", "--dataset", root, "--out", tmp_path / "t", "--candidates",
                            t], capsys)  # fmt: skip
    assert code != 0 and "only untrained candidates" in err
    code, _, err = run_cli(["score", "--out", tmp_path / "t", "--count", "2"], capsys)
    assert code != 0 and "EVEN and ODD" in err
