"""Datasets: layouts found with the right pairing, ambiguities refused, whole datasets denoised
(threads and a LocalCluster), skipped / refused / resumed per tomogram, failures isolated,
RELION-5 STAR written back, live acquisition followed. Real files on disk throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import tifffile

from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io.dataset import find_dataset, select
from tests.conftest import run_cli, write_mrc
from tests.test_denoise import make_checkpoint, structured

SHAPE = (32, 48, 48)


def _vol(seed: int, shape=SHAPE) -> np.ndarray:
    return structured(shape, seed=seed)


def aretomo3(root: Path, n: int = 3, shape=SHAPE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        v = _vol(i, shape)
        write_mrc(root / f"TS_{i}_Vol.mrc", v, 10.0)
        write_mrc(root / f"TS_{i}_EVN_Vol.mrc", v + 0.05 * _vol(100 + i, shape), 10.0)
        write_mrc(root / f"TS_{i}_ODD_Vol.mrc", v - 0.05 * _vol(100 + i, shape), 10.0)
    (root / "TS_0_EVN.mrc").write_bytes(b"tilt series, not a volume")  # AreTomo3 writes these
    return root


def _read(p: Path) -> np.ndarray:
    with mrcfile.open(p, permissive=True) as m:
        return np.asarray(m.data, dtype=np.float32)


# ---------------------------------------------------------------------------------- layouts


def test_aretomo3_layout_pairs_halves_with_their_tomogram(tmp_path):
    root = aretomo3(tmp_path / "a", 2)
    v = _vol(7)
    write_mrc(root / "Pos_7_EVN_Vol.mrc", v, 10.0)  # halves only: still a tomogram
    write_mrc(root / "Pos_7_ODD_Vol.mrc", v, 10.0)
    ds = find_dataset(root)
    assert ds.layout == "aretomo3" and ds.names() == ["Pos_7", "TS_0", "TS_1"]
    t = ds.tomograms[1]
    assert (t.full.name, t.even.name, t.odd.name) == (
        "TS_0_Vol.mrc", "TS_0_EVN_Vol.mrc", "TS_0_ODD_Vol.mrc")  # fmt: skip
    assert ds.tomograms[0].full is None and ds.tomograms[0].has_halves
    assert select(ds, "TS_1").names() == ["TS_1"]
    assert select(ds, exclude="TS_1,Pos_7").names() == ["TS_0"]
    with pytest.raises(InputError, match="no tomogram named 'TS_5'"):
        select(ds, "TS_5")


def test_warp_layout_keeps_dotted_names(tmp_path):
    rec = tmp_path / "warp" / "reconstruction"
    for sub in ("", "even", "odd"):
        (rec / sub).mkdir(parents=True, exist_ok=True)
        write_mrc(rec / sub / "TS_1_10.00Apx.mrc", _vol(1), 10.0)
    write_mrc(rec / "TS_2_10.00Apx.mrc", _vol(2), 10.0)  # no halves
    for source in (rec, tmp_path / "warp"):  # the folder, or the one holding it
        ds = find_dataset(source)
        assert ds.layout == "warp" and ds.names() == ["TS_1_10.00Apx", "TS_2_10.00Apx"]
        t = ds.tomograms[0]
        assert t.even == rec / "even" / "TS_1_10.00Apx.mrc" and t.odd.parent.name == "odd"
        assert ds.tomograms[1].even is None


def _relion(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    rec = proj / "Tomograms" / "job007" / "tomograms"
    rec.mkdir(parents=True)
    rows = []
    for i in range(2):
        write_mrc(rec / f"rec_TS_{i}_half1.mrc", _vol(i), 0.0)  # no voxel size in the header
        write_mrc(rec / f"rec_TS_{i}_half2.mrc", _vol(i) + 0.1, 0.0)
        rows.append({
            "rlnTomoName": f"TS_{i}", "rlnVoltage": 300.0, "rlnTomoTiltSeriesPixelSize": 2.5,
            "rlnTomoTomogramBinning": 4.0,
            "rlnTomoReconstructedTomogramHalf1": f"Tomograms/job007/tomograms/rec_TS_{i}_half1.mrc",
            "rlnTomoReconstructedTomogramHalf2": f"Tomograms/job007/tomograms/rec_TS_{i}_half2.mrc",
        })  # fmt: skip
    star = proj / "Tomograms" / "job007" / "tomograms.star"
    starfile.write({"global": pd.DataFrame(rows)}, star)
    return star


def test_relion5_star_paths_resolve_in_the_project_then_beside_the_file(tmp_path, monkeypatch):
    star = _relion(tmp_path)
    monkeypatch.chdir(tmp_path / "proj")  # RELION runs in its project directory
    ds = find_dataset("Tomograms/job007/tomograms.star")
    assert ds.layout == "relion5" and ds.names() == ["TS_0", "TS_1"]
    assert ds.tomograms[0].full is None and ds.tomograms[0].even.exists()
    assert ds.tomograms[0].voxel_size_angstrom == (10.0, 10.0, 10.0)  # 2.5 Å x binning 4
    monkeypatch.chdir(tmp_path)  # elsewhere: the paths are not found relative to here
    with pytest.raises(InputError, match="neither in the working directory"):
        find_dataset(star)
    # a project whose paths are relative to the STAR file's folder
    df = starfile.read(star, always_dict=True)["global"]
    for c in ("rlnTomoReconstructedTomogramHalf1", "rlnTomoReconstructedTomogramHalf2"):
        df[c] = [Path(p).relative_to("Tomograms/job007").as_posix() for p in df[c]]
    starfile.write({"global": df}, star, overwrite=True)
    assert find_dataset(star).tomograms[1].odd == star.parent / "tomograms/rec_TS_1_half2.mrc"


def test_glob_folder_and_lists(tmp_path):
    d = tmp_path / "vols"
    d.mkdir()
    write_mrc(d / "a.mrc", _vol(1), 10.0)
    tifffile.imwrite(d / "b.tif", _vol(2))
    assert find_dataset(d).names() == ["a", "b"] and find_dataset(d).layout == "folder"
    assert find_dataset(str(d / "*.mrc")).names() == ["a"]
    (tmp_path / "l.yaml").write_text(
        "- {name: x, full: vols/a.mrc}\n- {even: vols/a.mrc, odd: vols/b.tif}\n"
    )
    ds = find_dataset(tmp_path / "l.yaml")
    assert ds.names() == ["a", "x"] and ds.tomograms[0].odd == tmp_path / "vols/b.tif"
    (tmp_path / "l.csv").write_text("name,full,even,odd\ny,vols/a.mrc,,\n")
    assert find_dataset(tmp_path / "l.csv").tomograms[0].full == tmp_path / "vols/a.mrc"


@pytest.mark.parametrize("case", ["two conventions", "unpaired half", "one name twice"])
def test_ambiguous_datasets_are_refused_naming_the_files(tmp_path, capsys, case):
    d = tmp_path / "d"
    d.mkdir()
    if case == "two conventions":
        write_mrc(d / "TS_1_Vol.mrc", _vol(1), 10.0)
        (d / "even").mkdir()
        write_mrc(d / "even" / "TS_1.mrc", _vol(1), 10.0)
        want = "two conventions in one folder"
    elif case == "unpaired half":
        write_mrc(d / "TS_1_Vol.mrc", _vol(1), 10.0)
        write_mrc(d / "TS_1_EVN_Vol.mrc", _vol(1), 10.0)
        want = "TS_1_EVN_Vol.mrc: half of tomogram 'TS_1' without its odd partner"
    else:
        write_mrc(d / "a.mrc", _vol(1), 10.0)
        tifffile.imwrite(d / "a.tif", _vol(1))
        want = "two volumes give the tomogram name 'a'"
    code, _, err = run_cli(["info", "--dataset", d], capsys)
    assert code == 1 and want in err and len(err.strip().splitlines()) == 1, err
    if case != "unpaired half":
        assert "a.mrc" in err or "TS_1_Vol.mrc" in err


def test_info_dataset_prints_one_line_per_tomogram(tmp_path, capsys):
    root = aretomo3(tmp_path / "a", 2)
    code, out, _ = run_cli(["info", "--dataset", root], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and "aretomo3 layout, 2 tomograms" in lines[0] and len(lines) == 3
    assert "TS_0" in lines[1] and "32 x 48 x 48" in lines[1] and "full/even/odd" in lines[1]
    assert "voxel (10, 10, 10) Å" in lines[1] and "MiB" in lines[1]


# --------------------------------------------------------------------------------- denoising


def test_dataset_equals_single_volume_runs_and_reruns_skip(tmp_path, capsys):
    root = aretomo3(tmp_path / "a", 3)
    v = _vol(9)
    write_mrc(root / "H_EVN_Vol.mrc", v + 1, 10.0)  # halves only: their mean is denoised
    write_mrc(root / "H_ODD_Vol.mrc", v - 1, 10.0)
    out = tmp_path / "out"
    args = ["denoise", "--dataset", root, "--method", "gaussian", "--sigma", "1.5",
            "--out-dir", out, "--chunks", "16"]  # fmt: skip
    code, o, err = run_cli(args, capsys)
    assert code == 0, err
    assert "4 denoised, 0 already done, 0 failed" in o
    for i in range(3):
        single = tmp_path / f"s{i}.mrc"
        code, _, err = run_cli(
            ["denoise", root / f"TS_{i}_Vol.mrc", single, "--method", "gaussian", "--sigma",
             "1.5", "--chunks", "16"], capsys,
        )  # fmt: skip
        assert code == 0, err
        np.testing.assert_array_equal(_read(out / f"TS_{i}.mrc"), _read(single))
        with mrcfile.open(out / f"TS_{i}.mrc") as m:
            assert float(m.voxel_size.x) == pytest.approx(10.0)
    write_mrc(tmp_path / "mean.mrc", v, 10.0)
    run_cli(["denoise", tmp_path / "mean.mrc", tmp_path / "m.mrc", "--method", "gaussian",
             "--sigma", "1.5", "--chunks", "16"], capsys)  # fmt: skip
    np.testing.assert_allclose(_read(out / "H.mrc"), _read(tmp_path / "m.mrc"), atol=1e-5)
    report = pd.read_csv(out / "report.csv")
    assert list(report["status"]) == ["done"] * 4 and (report["voxels_per_s"] > 0).all()
    rec = json.loads((out / ".scnet-dask" / "TS_0.json").read_text())
    assert rec["identity"]["method"] == "gaussian" and rec["identity"]["inputs"][0]["size"] > 0
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mrc")}
    code, o, _ = run_cli(args, capsys)  # a rerun: everything is done
    assert code == 0 and "0 denoised, 4 already done" in o
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mrc")} == mtimes
    # other settings: refused per tomogram unless --overwrite, nothing rewritten
    other = [a if a != "1.5" else "2.0" for a in args]
    code, o, err = run_cli(other, capsys)
    assert code == 1 and "exists and was made otherwise (other options)" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mrc")} == mtimes
    code, o, err = run_cli([*other, "--overwrite"], capsys)
    assert code == 0 and "4 denoised" in o, err


def test_a_corrupt_tomogram_does_not_stop_the_others(tmp_path, capsys):
    root = aretomo3(tmp_path / "a", 6, shape=(16, 32, 32))
    (root / "TS_3_Vol.mrc").write_bytes(b"\0" * 100)  # truncated: not an MRC any more
    out = tmp_path / "out"
    code, o, err = run_cli(["denoise", "--dataset", root, "--method", "gaussian",
                            "--out-dir", out, "--chunks", "16"], capsys)  # fmt: skip
    assert code == 1 and "5 denoised, 0 already done, 1 failed" in o
    assert "TS_3_Vol.mrc" in err.strip().splitlines()[-1]
    assert sorted(p.name for p in out.glob("*.mrc")) == [f"TS_{i}.mrc" for i in (0, 1, 2, 4, 5)]
    report = pd.read_csv(out / "report.csv")
    assert report.set_index("tomogram").loc["TS_3", "status"] == "failed"


def test_relion_star_is_written_back_with_every_column(tmp_path, capsys, monkeypatch):
    star = _relion(tmp_path)
    monkeypatch.chdir(tmp_path / "proj")
    code, _, err = run_cli(["denoise", "--dataset", star, "--method", "gaussian", "--out-dir",
                            "Denoise/job010", "--chunks", "16"], capsys)  # fmt: skip
    assert code == 0, err
    before = starfile.read(star, always_dict=True)["global"]
    after = starfile.read("Denoise/job010/tomograms.star", always_dict=True)["global"]
    pd.testing.assert_frame_equal(after[before.columns], before)
    assert list(after["rlnTomoReconstructedTomogramDenoised"]) == [
        "Denoise/job010/TS_0.mrc", "Denoise/job010/TS_1.mrc"]  # fmt: skip
    with mrcfile.open("Denoise/job010/TS_0.mrc") as m:  # voxel size from the STAR table
        assert float(m.voxel_size.x) == pytest.approx(10.0)


def test_dataset_on_a_local_cluster_equals_single_runs_with_a_checkpoint(tmp_path, capsys):
    root = aretomo3(tmp_path / "a", 6, shape=(16, 32, 32))
    ck = make_checkpoint(tmp_path / "c.pt", features=4, voxel=10.0)
    out = tmp_path / "out"
    code, o, err = run_cli(
        ["denoise", "--dataset", root, ck, "--out-dir", out, "--chunks", "16", "--device", "cpu",
         "--cluster", "local", "--workers", "2", "--dashboard-address", ":0"], capsys,
    )  # fmt: skip
    assert code == 0 and "6 denoised" in o, err
    for i in range(6):
        single = tmp_path / f"s{i}.mrc"
        code, _, err = run_cli(["denoise", root / f"TS_{i}_Vol.mrc", ck, single, "--chunks",
                                "16", "--device", "cpu"], capsys)  # fmt: skip
        assert code == 0, err
        np.testing.assert_array_equal(_read(out / f"TS_{i}.mrc"), _read(single))


@pytest.mark.slow
def test_a_killed_dataset_run_resumes_to_the_identical_result(tmp_path):
    root = aretomo3(tmp_path / "a", 6, shape=(48, 96, 96))
    ck = make_checkpoint(tmp_path / "c.pt", features=8, voxel=10.0)
    cmd = [sys.executable, "-m", "scnet_dask.cli", "denoise", "--dataset", str(root), str(ck),
           "--chunks", "16", "--device", "cpu"]  # fmt: skip
    ref = tmp_path / "ref"
    subprocess.run([*cmd, "--out-dir", str(ref)], check=True, capture_output=True)
    out = tmp_path / "out"
    proc = subprocess.Popen([*cmd, "--out-dir", str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    records = out / ".scnet-dask"
    while len(list(records.glob("TS_*.json"))) < 3:
        time.sleep(0.05)
        assert proc.poll() is None
    while not any(len(list(d.glob("*"))) >= 2 for d in out.glob(".TS_*.work.zarr.done")):
        time.sleep(0.02)  # into the 4th tomogram: a few of its chunks done
        assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("TS_*.mrc")}
    assert len(done) >= 3
    # the half-done tomogram: its work store's chunk markers (one file per finished chunk)
    half = {d.name.split(".")[1]: len(list(d.glob("*"))) for d in out.glob(".TS_*.work.zarr.done")}
    assert half and all(half.values())
    r = subprocess.run([*cmd, "--out-dir", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{6 - len(done)} denoised, {len(done)} already done" in r.stdout
    assert {k: (out / k).stat().st_mtime_ns for k in done} == done  # never rewritten
    for i in range(6):
        np.testing.assert_array_equal(_read(out / f"TS_{i}.mrc"), _read(ref / f"TS_{i}.mrc"))
    total = json.loads((ref / ".scnet-dask" / "TS_0.json").read_text())["chunks_computed"]
    for name, n in half.items():  # only the missing chunks were computed
        rec = json.loads((out / ".scnet-dask" / f"{name}.json").read_text())
        assert rec["chunks_resumed"] == n and rec["chunks_computed"] == total - n


def test_live_mode_waits_for_complete_tomograms(tmp_path, capsys):
    root = aretomo3(tmp_path / "a", 1, shape=(16, 32, 32))
    out = tmp_path / "out"

    def acquire():
        time.sleep(0.5)
        v = _vol(5, (16, 32, 32))
        write_mrc(root / "TS_5_Vol.mrc", v, 10.0)
        write_mrc(root / "TS_5_EVN_Vol.mrc", v, 10.0)
        write_mrc(root / "TS_5_ODD_Vol.mrc", v, 10.0)
        # a slow writer: the file grows in pieces
        write_mrc(tmp_path / "full.mrc", _vol(6, (16, 32, 32)), 10.0)
        data = (tmp_path / "full.mrc").read_bytes()
        with open(root / "TS_6_Vol.mrc", "wb") as f:
            for k in range(0, len(data), len(data) // 6):
                f.write(data[k : k + len(data) // 6])
                f.flush()
                time.sleep(0.3)

    th = threading.Thread(target=acquire)
    th.start()
    code, o, err = run_cli(["denoise", "--dataset", root, "--method", "gaussian", "--out-dir",
                            out, "--chunks", "16", "--live", "--poll-s", "0.2",
                            "--live-timeout-s", "10"], capsys)  # fmt: skip
    th.join()
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.mrc")) == ["TS_0.mrc", "TS_5.mrc", "TS_6.mrc"]
    assert "3 denoised" in o
    np.testing.assert_array_equal(  # the slow one was denoised only once complete
        _read(out / "TS_6.mrc"),
        _read_single(tmp_path, capsys, tmp_path / "full.mrc"),
    )


def _read_single(tmp_path: Path, capsys, src: Path) -> np.ndarray:
    dst = tmp_path / f"single_{src.stem}.mrc"
    code, _, err = run_cli(["denoise", src, dst, "--method", "gaussian", "--chunks", "16"], capsys)
    assert code == 0, err
    return _read(dst)


def test_apply_halves_and_report_fsc(tmp_path, capsys):
    root = aretomo3(tmp_path / "a", 1)
    out = tmp_path / "out"
    code, o, err = run_cli(["denoise", "--dataset", root, "--method", "gaussian", "--out-dir",
                            out, "--chunks", "16", "--apply", "halves", "--report-fsc",
                            "--format", "zarr"], capsys)  # fmt: skip
    assert code == 0, err
    singles = []
    for half in ("EVN", "ODD"):
        dst = tmp_path / f"{half}.zarr"
        code, _, err = run_cli(["denoise", root / f"TS_0_{half}_Vol.mrc", dst, "--method",
                                "gaussian", "--chunks", "16"], capsys)  # fmt: skip
        assert code == 0, err
        singles.append(open_source(dst).data.compute())
    got = open_source(out / "TS_0.zarr")
    np.testing.assert_allclose(got.data.compute(), (singles[0] + singles[1]) / 2, atol=1e-6)
    assert got.voxel_size_angstrom == (10.0, 10.0, 10.0)
    row = pd.read_csv(out / "report.csv").iloc[0]
    assert 20.0 <= row["fsc_0143_angstrom"] <= row["fsc_05_angstrom"] < 1e4
    assert not (out / ".work" / "TS_0").exists()  # intermediate halves removed


def test_dataset_options_need_a_dataset(tmp_path, capsys):
    src = write_mrc(tmp_path / "v.mrc", _vol(1), 10.0)
    code, _, err = run_cli(["denoise", src, tmp_path / "o.mrc", "--method", "gaussian",
                            "--out-dir", tmp_path / "d"], capsys)  # fmt: skip
    assert code == 1 and "--out-dir applies to --dataset only" in err
    code, _, err = run_cli(["denoise", "--dataset", tmp_path, "--method", "gaussian"], capsys)
    assert code == 1 and "--dataset needs --out-dir" in err
    code, _, err = run_cli(["denoise", "--dataset", tmp_path / "nope", "--method", "gaussian",
                            "--out-dir", tmp_path / "d"], capsys)  # fmt: skip
    assert code == 1 and "nope: no such dataset" in err
    assert not (tmp_path / "d").exists()  # a bad SOURCE leaves nothing behind


def test_halves_of_different_voxel_sizes_are_refused(tmp_path, capsys):
    d = tmp_path / "a"
    d.mkdir()
    write_mrc(d / "TS_1_EVN_Vol.mrc", _vol(1), 10.0)
    write_mrc(d / "TS_1_ODD_Vol.mrc", _vol(1), 12.0)
    code, _, err = run_cli(["denoise", "--dataset", d, "--method", "gaussian", "--out-dir",
                            tmp_path / "out", "--chunks", "16"], capsys)  # fmt: skip
    assert code == 1 and "TS_1_ODD_Vol.mrc: half of tomogram 'TS_1' has voxel size (12.0" in err
    assert not list((tmp_path / "out").glob("*.mrc"))


def test_halves_left_by_a_run_with_other_settings_are_not_reused(tmp_path, capsys):
    root = aretomo3(tmp_path / "a", 1)
    out = tmp_path / "out"
    stale = out / ".work" / "TS_0" / "even.zarr"  # as an interrupted --sigma 3 run leaves it
    stale.parent.mkdir(parents=True)
    code, _, err = run_cli(["denoise", root / "TS_0_EVN_Vol.mrc", stale, "--method", "gaussian",
                            "--sigma", "3", "--chunks", "16"], capsys)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(["denoise", "--dataset", root, "--method", "gaussian", "--out-dir",
                            out, "--chunks", "16", "--apply", "halves"], capsys)  # fmt: skip
    assert code == 0, err
    singles = []
    for half in ("EVN", "ODD"):
        dst = tmp_path / f"{half}.mrc"
        run_cli(["denoise", root / f"TS_0_{half}_Vol.mrc", dst, "--method", "gaussian",
                 "--chunks", "16"], capsys)  # fmt: skip
        singles.append(_read(dst))
    np.testing.assert_allclose(_read(out / "TS_0.mrc"), (singles[0] + singles[1]) / 2,
                               atol=1e-6)  # fmt: skip
