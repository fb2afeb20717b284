"""The ``scnet-dask`` command line: thin wrappers that validate and call library code."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from scnet_dask import __version__
from scnet_dask._cliutil import (
    build_config,
    cluster_options,
    config_option,
    on_cluster,
    setup_logging,
)
from scnet_dask.config import (
    ConvertConfig,
    DenoiseConfig,
    ExportConfig,
    InfoConfig,
    PriorConfig,
    TrainConfig,
)
from scnet_dask.errors import InputError, OutputError, RunStopped

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scnet-dask")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Self-supervised SC-Net denoising of cryo-ET tomograms and vEM stacks, out of core."""
    setup_logging(verbose)


@cli.command()
@config_option(ConvertConfig)
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("--chunks", type=int, default=128, show_default=True, help="Chunk edge in voxels.")
@click.option(
    "--voxel-size", type=float, default=None, help="Voxel size in Å (overrides the header)."
)
@click.option(
    "--dtype", type=click.Choice(["float32", "source"]), default="float32", show_default=True
)
@click.option(
    "--swap-yz", is_flag=True, help="Swap Y and Z (thickness along Y, IMOD's un-rotated output)."
)
@click.option(
    "--nan-policy", type=click.Choice(["error", "zero", "mean"]), default="error", show_default=True
)
@click.option(
    "--pyramid-levels", type=int, default=3, show_default=True, help="Levels incl. full resolution."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--resume", is_flag=True, help="Continue an interrupted conversion.")
@cluster_options
def convert(**kwargs: Any) -> None:
    """Convert an MRC/TIFF/Zarr volume INPUT into chunked OME-Zarr OUTPUT."""
    from scnet_dask.convert import convert as run

    with on_cluster(kwargs):
        summary = run(build_config(ConvertConfig, **kwargs))
    st = summary["statistics"]
    click.echo(
        f"wrote {summary['output']}: shape {tuple(summary['shape'])} {summary['dtype']}, "
        f"voxel {tuple(round(v, 4) for v in summary['voxel_size_angstrom'])} Å, "
        f"mean {st['mean']:.4g} std {st['std']:.4g}, "
        f"{summary['raw_bytes'] / max(summary['stored_bytes'], 1):.2f}x compression"
    )


@cli.command()
@config_option(ExportConfig)
@click.argument("input", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "source"]),
    default="float32",
    show_default=True,
    help="Output data type; 'source' restores the converted file's.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def export(**kwargs: Any) -> None:
    """Export an OME-Zarr INPUT to an MRC or TIFF OUTPUT (by its suffix)."""
    from scnet_dask.export import export as run

    summary = run(build_config(ExportConfig, **kwargs))
    click.echo(f"wrote {summary['output']}: shape {tuple(summary['shape'])} {summary['dtype']}")


@cli.command()
@config_option(InfoConfig)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
def info(path: Path, json_output: bool) -> None:
    """Describe a volume: shape, dtype, chunks, voxel size (Å), statistics, pyramid, bytes."""
    from scnet_dask.info import format_info, volume_info

    cfg = build_config(InfoConfig, path=path, json_output=json_output)
    data = volume_info(cfg.path)
    click.echo(json.dumps(data) if cfg.json_output else format_info(data))


@cli.command()
@config_option(PriorConfig)
@click.argument("noisy", type=click.Path(path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option(
    "--method",
    type=click.Choice(["gaussian", "topaz-3d", "tilt-series", "file"]),
    default="gaussian",
    show_default=True,
)
@click.option("--sigma", type=float, default=1.0, show_default=True, help="Gaussian σ in voxels.")
@click.option(
    "--model",
    type=click.Choice(["unet-3d-10a", "unet-3d-20a"]),
    default="unet-3d-10a",
    show_default=True,
    help="Topaz pretrained 3-D model.",
)
@click.option(
    "--tilt-series",
    type=click.Path(path_type=Path),
    default=None,
    help="Aligned tilt series (n_tilts, Y, X), with --method tilt-series.",
)
@click.option(
    "--tlt",
    type=click.Path(path_type=Path),
    default=None,
    help="Tilt angles in degrees, one per line (.tlt/.rawtlt).",
)
@click.option(
    "--tilt-axis",
    type=click.Choice(["x", "y"]),
    default="x",
    show_default=True,
    help="Image axis the tilt axis lies along.",
)
@click.option(
    "--angle-sign",
    type=click.Choice(["1", "-1"]),
    default="-1",
    show_default=True,
    help="Tilt-angle sign convention of the back-projection.",
)
@click.option(
    "--prior-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Your own smoothed volume (same grid), with --method file.",
)
@click.option("--tile", type=int, default=96, show_default=True, help="Topaz tile edge (voxels).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@cluster_options
def prior(**kwargs: Any) -> None:
    """Make the smoothed prior volume for NOISY (an OME-Zarr) into OUTPUT (.zarr)."""
    from scnet_dask.prior import make_prior

    kwargs["angle_sign"] = int(kwargs["angle_sign"])
    with on_cluster(kwargs):
        summary = make_prior(build_config(PriorConfig, **kwargs))
    click.echo(
        f"wrote {summary['output']}: {summary['method']} prior, shape {tuple(summary['shape'])}"
    )


@cli.command()
@config_option(TrainConfig)
@click.argument("noisy", type=click.Path(path_type=Path))
@click.option(
    "--prior",
    type=click.Path(path_type=Path),
    default=None,
    help="Prior OME-Zarr (from 'scnet-dask prior'); needed for --method scnet.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run directory.")
@click.option(
    "--method",
    type=click.Choice(["scnet", "n2v"]),
    default="scnet",
    show_default=True,
    help="scnet, or the Noise2Void baseline (single-voxel blind spots, L_rec only, no prior).",
)
@click.option("--epochs", type=int, default=15, show_default=True)
@click.option("--patch-size", type=int, default=128, show_default=True, help="Multiple of 16.")
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option("--features", type=int, default=32, show_default=True, help="nch_ker of SC-Net.")
@click.option(
    "--steps-per-epoch",
    type=int,
    default=None,
    help="Default: 0.9 x the number of non-overlapping patches / batch size.",
)
@click.option("--val-patches", type=int, default=4, show_default=True)
@click.option("--lr", type=float, default=4e-4, show_default=True)
@click.option(
    "--rec-warmup",
    type=float,
    default=0.1,
    show_default=True,
    help="Fraction of the steps on L_rec alone before the prior terms ramp in (0 = paper).",
)
@click.option(
    "--rec-variant",
    type=click.Choice(["replaced", "unreplaced"]),
    default="replaced",
    show_default=True,
    help="L_rec on replaced voxels (paper) or unreplaced (code).",
)
@click.option(
    "--blind-spot-mode",
    type=click.Choice(["internal", "cross"]),
    default="internal",
    show_default=True,
)
@click.option(
    "--upsample/--no-upsample",
    default=True,
    show_default=True,
    help="SC-Net's 2x nearest up-sampling block.",
)
@click.option("--foreground-mask", is_flag=True, help="Sample patches only in the foreground.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly.")
@click.option("--overwrite", is_flag=True, help="Start over in an existing run directory.")
@click.option(
    "--ranks",
    type=int,
    default=None,
    help="Data-parallel ranks on a --cluster (default: one per worker).",
)
@cluster_options
def train(ranks: int | None, **kwargs: Any) -> None:
    """Train SC-Net on the NOISY OME-Zarr with a --prior (or --method n2v); checkpoints to --out.

    With --cluster other than threads, one PyTorch DDP rank runs on each Dask worker.
    """
    from scnet_dask.train import train as run

    if kwargs["cluster"] != "threads" and kwargs.get("worker_logs") is None:
        kwargs["worker_logs"] = Path(kwargs["out"]) / "worker-logs"
    with on_cluster(kwargs) as client:
        cfg = build_config(TrainConfig, **kwargs)
        if client is None:
            s = run(cfg)
        else:
            from scnet_dask.ddp import train_distributed

            s = train_distributed(cfg, client, ranks)
            click.echo(
                f"{len(s['replica_sha256'])} DDP ranks; replicas identical: "
                f"{len(set(s['replica_sha256'])) == 1}"
            )
    click.echo(
        f"trained {s['epochs']} epochs ({s['steps']} steps) on {s['device']}: best validation "
        f"loss {s['best_val']:.5g}, {s['mean_step_seconds']:.3f} s/step, data wait "
        f"{100 * s['wait_fraction']:.1f} %; checkpoints in {s['run_dir']}"
    )


@cli.command()
@config_option(DenoiseConfig)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--method",
    type=click.Choice(["scnet", "n2v", "gaussian", "lowpass", "topaz-3d", "bm4d"]),
    default="scnet",
    show_default=True,
    help="scnet or n2v (need CHECKPOINT from 'train --method'), or a baseline without one: "
    "gaussian, lowpass, topaz-3d, bm4d (slow).",
)
@click.option(
    "--chunks", type=int, default=128, show_default=True, help="Tile core edge (multiple of 16)."
)
@click.option(
    "--halo",
    default="auto",
    show_default=True,
    help="Voxels added on each side of a chunk; auto = receptive field + post-filter + blend.",
)
@click.option(
    "--window", type=click.Choice(["gaussian", "cosine"]), default="gaussian", show_default=True
)
@click.option("--batch-size", type=int, default=1, show_default=True, help="Tiles per forward.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="bfloat16 autocast on GPU.")
@click.option(
    "--post-sigma",
    type=float,
    default=None,
    help="Gaussian σ (voxels) applied after the network; default 0.5 for scnet (the paper's), "
    "0 for n2v.",
)
@click.option(
    "--sigma", type=float, default=1.0, show_default=True, help="σ (voxels) of --method gaussian."
)
@click.option(
    "--cutoff-angstrom",
    type=float,
    default=40.0,
    show_default=True,
    help="--method lowpass: resolution (Å) where the response falls to 0.5.",
)
@click.option(
    "--noise-sigma",
    type=float,
    default=None,
    help="--method bm4d: noise σ in the input's units (default: estimated from the volume).",
)
@click.option(
    "--bm4d-profile", type=click.Choice(["np", "refilter"]), default="np", show_default=True
)
@click.option(
    "--topaz-model",
    type=click.Choice(["unet-3d-10a", "unet-3d-20a"]),
    default="unet-3d-10a",
    show_default=True,
)
@click.option("--resume", is_flag=True, help="Finish an interrupted run (only missing chunks).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@cluster_options
def denoise(paths: tuple[Path, ...], halo: str, **kwargs: Any) -> None:
    """Denoise INPUT with CHECKPOINT into OUTPUT: denoise INPUT [CHECKPOINT] OUTPUT.

    INPUT is OME-Zarr, MRC or TIFF; OUTPUT is .zarr (OME-Zarr), .mrc/.rec or .tif. CHECKPOINT
    (best.pt of 'scnet-dask train') is needed for --method scnet and n2v only.
    """
    from scnet_dask.denoise import denoise as run

    if len(paths) == 3:
        inp, ckpt, outp = paths
    elif len(paths) == 2:
        (inp, outp), ckpt = paths, None
    else:
        raise click.UsageError(f"expected INPUT [CHECKPOINT] OUTPUT, got {len(paths)} paths")
    halo_value: int | str = halo
    if halo != "auto":
        try:
            halo_value = int(halo)
        except ValueError:
            raise click.BadParameter(f"must be 'auto' or voxels, got {halo!r}") from None
    with on_cluster(kwargs):
        cfg = build_config(
            DenoiseConfig, input=inp, checkpoint=ckpt, output=outp, halo=halo_value, **kwargs
        )
        s = run(cfg)
    st = s["statistics"]
    click.echo(
        f"wrote {s['output']}: {s['method']}, shape {tuple(s['shape'])}, halo "
        f"{tuple(s['halo'])} voxels ({s['halo_overhead']:.2f} tile voxels per output voxel), "
        f"{s['chunks_written']} chunks computed, {s['chunks_skipped']} resumed; "
        f"mean {st['mean']:.4g} std {st['std']:.4g}"
    )


@cli.command()
@click.argument("volume", type=click.Path(path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option(
    "--noise-sigma",
    default="10,15,20",
    show_default=True,
    help="Noise levels (comma-separated), in units of projections scaled to [0, 255].",
)
@click.option("--tilts", default="-60:60:2", show_default=True, help="START:STOP:STEP, degrees.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["zarr", "mrc"]), default="zarr")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty OUT_DIR.")
@cluster_options
def simulate(
    volume: Path, out_dir: Path, noise_sigma: str, tilts: str, seed: int, fmt: str,
    overwrite: bool, **kwargs: Any,
) -> None:  # fmt: skip
    """The paper's simulation: Gaussian σ 2 ground truth, re-projection, noisy tilts, WBP."""
    from scnet_dask.simulate import simulate as run

    try:
        sigmas = tuple(float(v) for v in noise_sigma.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"--noise-sigma must be numbers, got {noise_sigma!r}") from None
    with on_cluster(kwargs):
        m = run(volume, out_dir, sigmas, tilts, seed, fmt, overwrite)
    click.echo(
        f"wrote {len(m['files'])} volumes and manifest.json to {out_dir}: "
        f"{len(m['tilt_angles_deg'])} tilts, noise σ {', '.join(f'{s:g}' for s in sigmas)}"
    )


@cli.command()
@click.argument("config", type=click.Path(path_type=Path))
@cluster_options
def evaluate(config: Path, **kwargs: Any) -> None:
    """Run the methods listed in CONFIG (YAML) on a dataset; write tables and figures."""
    from scnet_dask.evaluate import evaluate as run
    from scnet_dask.evaluate import load_config

    cfg = load_config(config)
    with on_cluster(kwargs):
        rows = run(cfg)
    click.echo((Path(cfg.out_dir) / "results.md").read_text().rstrip())
    click.echo(f"{len(rows)} methods; results.csv, fsc.png, slices.png in {cfg.out_dir}")


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("scnet-demo"),
    show_default=True,
    help="Folder for the demo's outputs (replaced).",
)
def demo(out_dir: Path) -> None:
    """Run the pipeline on the embedded sample tomogram and print a summary."""
    from scnet_dask.demo import run_demo

    click.echo(run_demo(out_dir))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning expected errors into one line and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="scnet-dask", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("scnet-dask: aborted", err=True)
        sys.exit(130)
    except (
        InputError,
        OutputError,
        RunStopped,
        FileNotFoundError,
        FileExistsError,
        ValueError,
        OSError,
    ) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        click.echo(f"scnet-dask: error: {msg}", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
