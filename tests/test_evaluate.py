from __future__ import annotations

import csv

import numpy as np
import yaml

from scnet_dask.io import open_source
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import make_checkpoint


def test_evaluate_tables_and_figures(tmp_path, capsys):
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:32, 0:48, 0:48].astype(np.float32)
    clean = (np.sin(x / 3) * np.cos(y / 4) + np.sin(z / 3)).astype(np.float32)
    half = [clean + 1.0 * rng.standard_normal(clean.shape).astype(np.float32) for _ in range(2)]
    full = (half[0] + half[1]) / 2
    paths = {}
    for name, v in (("clean", clean), ("noisy", full), ("even", half[0]), ("odd", half[1])):
        paths[name] = str(write_mrc(tmp_path / f"{name}.mrc", v, voxel=10.0))
    make_checkpoint(tmp_path / "c.pt", features=2, voxel=10.0)
    make_checkpoint(tmp_path / "ce.pt", features=2, voxel=10.0)
    make_checkpoint(tmp_path / "co.pt", features=2, voxel=10.0)
    cfg = {
        "name": "synthetic",
        "noisy": "noisy.mrc",
        "reference": "clean.mrc",
        "even": "even.mrc",
        "odd": "odd.mrc",
        "out_dir": "eval",
        "chunks": 32,
        "device": "cpu",
        "methods": [
            {"name": "noisy", "method": "none"},
            {"name": "gaussian σ1", "method": "gaussian", "sigma": 1.0},
            {"name": "lowpass 30 Å", "method": "lowpass", "cutoff_angstrom": 30.0},
            {"name": "SC-Net (random weights)", "method": "scnet", "checkpoint": "c.pt"},
            {
                "name": "per half",
                "method": "scnet",
                "checkpoint": "c.pt",
                "checkpoint_even": "ce.pt",
                "checkpoint_odd": "co.pt",
            },
        ],
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    code, out, err = run_cli(["evaluate", tmp_path / "eval.yaml"], capsys)
    assert code == 0, err
    assert "| gaussian σ1 ¹ |" in out and "FSC_e/o 0.5 (Å)" in out
    # a linear filter cannot change FSC_e/o; one model for both halves is biased; per-half
    # models are not
    assert "| SC-Net (random weights) ² |" in out and "| per half |" in out
    assert "cannot change FSC_e/o" in out and "biased upwards" in out
    with open(tmp_path / "eval" / "results.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(rows) == {m["name"] for m in cfg["methods"]}
    # smoothing helps on this smooth phantom: better PSNR/SSIM and a finer FSC_e/o resolution
    assert float(rows["gaussian σ1"]["psnr_db"]) > float(rows["noisy"]["psnr_db"]) + 3
    assert float(rows["gaussian σ1"]["ssim"]) > float(rows["noisy"]["ssim"])
    assert all(np.isfinite(float(r["res_05_angstrom"])) for r in rows.values())
    for png in ("fsc.png", "slices.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 1000
    den = open_source(tmp_path / "eval" / "volumes" / "sc_net_random_weights.zarr")
    assert den.attrs["provenance"][-1]["method"] == "scnet"


def test_evaluate_bad_config(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("noisy: a.mrc\nout_dir: o\nmethods: []\nfoo: 1\n")
    code, _, err = run_cli(["evaluate", tmp_path / "bad.yaml"], capsys)
    assert code == 1 and "foo: unknown option" in err
    (tmp_path / "b2.yaml").write_text("noisy: a.mrc\nout_dir: o\nmethods: []\n")
    code, _, err = run_cli(["evaluate", tmp_path / "b2.yaml"], capsys)
    assert code == 1 and "no methods" in err


def test_evaluate_checks_everything_first_and_a_rerun_continues(tmp_path, capsys):
    import numpy as np

    from tests.conftest import write_mrc

    rng = np.random.default_rng(0)
    write_mrc(tmp_path / "n.mrc", rng.standard_normal((16, 32, 32)).astype(np.float32), 10.0)
    write_mrc(tmp_path / "r.mrc", rng.standard_normal((16, 32, 24)).astype(np.float32), 10.0)
    cfg = tmp_path / "e.yaml"
    cfg.write_text(
        "noisy: n.mrc\nreference: r.mrc\nout_dir: out\nchunks: 16\n"
        "methods:\n  - {name: g, method: gaussian, sigma: 1.0}\n"
    )
    code, _, err = run_cli(["evaluate", cfg], capsys)
    assert code == 1 and "r.mrc: grid (16, 32, 24) differs" in err
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written
    write_mrc(tmp_path / "r.mrc", rng.standard_normal((16, 32, 32)).astype(np.float32), 10.0)
    assert run_cli(["evaluate", cfg], capsys)[0] == 0
    assert run_cli(["evaluate", cfg], capsys)[0] == 0  # a rerun replaces its own results
