"""The ``scnet-dask`` command line: thin wrappers that validate and call library code.

Every option is declared once, as a field of a pydantic config (:mod:`scnet_dask.config`) or of
a method's options (:mod:`scnet_dask.methods`); the click options, their help and the keys of
``--config FILE.yaml`` are generated from those fields when a command is looked up, so a method
registered at run time brings its options with it.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from scnet_dask import __version__
from scnet_dask.cli.dataset import run_dataset_denoise, run_dataset_info, split_dataset_options
from scnet_dask.cli.more import demo_command, evaluate_command, import_scnet_command, score_command
from scnet_dask.cli.options import (
    build_config,
    command_from_models,
    on_cluster,
    path_argument,
    sections_help,
    setup_logging,
)
from scnet_dask.cli.per_method import (
    chosen_method,
    method_models,
    method_option,
    without_fields,
)
from scnet_dask.commands import auto as auto_cmd
from scnet_dask.commands import convert as convert_cmd
from scnet_dask.commands import denoise as denoise_cmd
from scnet_dask.commands import export as export_cmd
from scnet_dask.commands import info as info_cmd
from scnet_dask.commands import prior as prior_cmd
from scnet_dask.commands import simulate as simulate_cmd
from scnet_dask.config import (
    ConvertConfig,
    DatasetConfig,
    DenoiseConfig,
    ExportConfig,
    InfoConfig,
    PriorConfig,
    SimulateConfig,
    TrainConfig,
)
from scnet_dask.distributed import ddp
from scnet_dask.engine import train as train_engine
from scnet_dask.errors import InputError, OutputError, RunStopped
from scnet_dask.methods import names

__all__ = ["cli", "main"]

_STATE = {"verbose": 0}


# --- commands ------------------------------------------------------------------------------
def _convert() -> click.Command:
    def body(**kwargs: Any) -> None:
        with on_cluster(kwargs):
            summary = convert_cmd.convert(build_config(ConvertConfig, **kwargs))
        st = summary["statistics"]
        click.echo(
            f"wrote {summary['output']}: shape {tuple(summary['shape'])} {summary['dtype']}, "
            f"voxel {tuple(round(v, 4) for v in summary['voxel_size_angstrom'])} Å, "
            f"mean {st['mean']:.4g} std {st['std']:.4g}, "
            f"{summary['raw_bytes'] / max(summary['stored_bytes'], 1):.2f}x compression"
        )

    return command_from_models(
        "convert", [("", ConvertConfig)], [path_argument("input"), path_argument("output")], body,
        "Convert an MRC/TIFF/Zarr volume INPUT into chunked OME-Zarr OUTPUT.", cluster=True,
    )  # fmt: skip


def _export() -> click.Command:
    def body(**kwargs: Any) -> None:
        summary = export_cmd.export(build_config(ExportConfig, **kwargs))
        click.echo(f"wrote {summary['output']}: shape {tuple(summary['shape'])} {summary['dtype']}")

    return command_from_models(
        "export", [("", ExportConfig)], [path_argument("input"), path_argument("output")], body,
        "Export an OME-Zarr INPUT to an MRC or TIFF OUTPUT (by its suffix).",
    )  # fmt: skip


def _info() -> click.Command:
    def body(**kwargs: Any) -> None:
        cfg = build_config(InfoConfig, **kwargs)
        if cfg.dataset is not None:
            out = run_dataset_info(cfg.dataset, cfg.tomograms, cfg.exclude, cfg.json_output)
            click.echo(out)
            return
        if cfg.path is None:
            raise click.UsageError("give a volume PATH, or --dataset SOURCE")
        data = info_cmd.volume_info(cfg.path, scan=cfg.scan)
        click.echo(json.dumps(data) if cfg.json_output else info_cmd.format_info(data))

    return command_from_models(
        "info", [("", InfoConfig)], [path_argument("path", required=False)], body,
        "Describe a volume: shape, dtype, chunks, voxel size (Å), statistics, pyramid, bytes.",
    )  # fmt: skip


def _prior() -> click.Command:
    def body(**kwargs: Any) -> None:
        with on_cluster(kwargs):
            summary = prior_cmd.make_prior(build_config(PriorConfig, **kwargs))
        click.echo(
            f"wrote {summary['output']}: {summary['method']} prior, shape {tuple(summary['shape'])}"
        )

    return command_from_models(
        "prior", [("", PriorConfig)], [path_argument("noisy"), path_argument("output")], body,
        "Make the smoothed prior volume for NOISY (an OME-Zarr) into OUTPUT (.zarr).",
        cluster=True,
    )  # fmt: skip


def _train(method: str = "scnet") -> click.Command:
    def body(**kwargs: Any) -> None:
        if kwargs.get("kind") not in (None, "threads") and kwargs.get("log_dir") is None:
            kwargs["log_dir"] = Path(kwargs["out"]) / "worker-logs"
        with on_cluster(kwargs) as client:
            cfg = build_config(TrainConfig, **kwargs)
            if client is None:
                s = train_engine.train(cfg)
            else:
                s = ddp.train_distributed(cfg, client, cfg.ranks)
                click.echo(
                    f"{len(s['replica_sha256'])} DDP ranks; replicas identical: "
                    f"{len(set(s['replica_sha256'])) == 1}"
                )
        click.echo(
            f"trained {s['epochs']} epochs ({s['steps']} steps) on {s['device']}: best "
            f"validation loss {_figure(s['best_val'], '.5g')}, "
            f"{_figure(s['mean_step_seconds'], '.3f')} s/step, data "
            f"wait {100 * s['wait_fraction']:.1f} %; checkpoints in {s['run_dir']}"
        )

    models = [
        *method_option("train"),
        ("", without_fields(TrainConfig, "method")),
        *method_models("train", _known(method)),
    ]
    return command_from_models(
        "train", models, [path_argument("noisy", required=False)], body,
        "Train --method on the NOISY OME-Zarr (its first input), or on many tomograms with "
        "--dataset SOURCE; checkpoints to --out. With "
        "--cluster other than threads, one PyTorch DDP rank runs on each Dask worker. "
        f"The options shown are the engine's and --method {method}'s; another method's: "
        "'scnet-dask train --method NAME --help'." + sections_help(models),
        cluster=True, method=("train", method),
    )  # fmt: skip


def _denoise(method: str = "scnet") -> click.Command:
    def body(paths: tuple[Path, ...], **kwargs: Any) -> None:
        dcfg = split_dataset_options(kwargs)
        if dcfg.dataset is not None:
            run_dataset_denoise(paths, dcfg, kwargs)
            return
        if len(paths) == 3:
            inp, ckpt, outp = paths
        elif len(paths) == 2:
            (inp, outp), ckpt = paths, None
        else:
            raise click.UsageError(f"expected INPUT [CHECKPOINT] OUTPUT, got {len(paths)} paths")
        with on_cluster(kwargs):
            cfg = build_config(DenoiseConfig, input=inp, checkpoint=ckpt, output=outp, **kwargs)
            s = auto_cmd.denoise_auto(cfg) if cfg.method == "auto" else denoise_cmd.denoise(cfg)
        if "auto" in s:
            click.echo(f"--method auto picked {s['auto']['picked']} (best of "
                       f"{len(s['auto']['score'])} candidates by the half-split score)")
        st = s["statistics"]
        click.echo(
            f"wrote {s['output']}: {s['method']}, shape {tuple(s['shape'])}, "
            f"tile {tuple(s['tile']) if s['tile'] else 'per chunk'}, halo "
            f"{tuple(s['halo'])}/{tuple(s['halo_hi'])} voxels (low/high side; "
            f"{s['halo_overhead']:.2f} tile voxels per output voxel), "
            f"{s['chunks_written']} chunks computed, {s['chunks_skipped']} resumed; "
            f"mean {st['mean']:.4g} std {st['std']:.4g}"
        )

    models: list[tuple[str, type[BaseModel]]] = [
        *method_option("denoise"),
        ("", without_fields(DenoiseConfig, "method", "input", "output", "checkpoint")),
        *method_models("denoise", _known(method)),
        ("", DatasetConfig),
    ]
    paths = click.Argument(["paths"], nargs=-1, required=False, type=click.Path(path_type=Path))
    return command_from_models(
        "denoise", models, [paths], body,
        "Denoise INPUT into OUTPUT: denoise INPUT [CHECKPOINT] OUTPUT. INPUT is OME-Zarr, MRC or "
        "TIFF; OUTPUT is .zarr (OME-Zarr), .mrc/.rec or .tif. CHECKPOINT (best.pt of 'scnet-dask "
        "train') is needed for the trained methods only. A whole dataset: denoise --dataset "
        "SOURCE [CHECKPOINT] --out-dir DIR. "
        f"The options shown are the common ones and --method {method}'s; another method's: "
        "'scnet-dask denoise --method NAME --help'." + sections_help(models),
        cluster=True, method=("denoise", method),
    )  # fmt: skip


def _simulate() -> click.Command:
    def body(**kwargs: Any) -> None:
        with on_cluster(kwargs):
            cfg = build_config(SimulateConfig, **kwargs)
            sigmas = cfg.sigmas()
            m = simulate_cmd.simulate(
                cfg.volume, cfg.out_dir, sigmas, cfg.tilts, cfg.seed, cfg.format, cfg.overwrite
            )
        click.echo(
            f"wrote {len(m['files'])} volumes and manifest.json to {cfg.out_dir}: "
            f"{len(m['tilt_angles_deg'])} tilts, noise σ {', '.join(f'{s:g}' for s in sigmas)}"
        )

    return command_from_models(
        "simulate", [("", SimulateConfig)],
        [path_argument("volume"), path_argument("out_dir")], body,
        "The paper's simulation: Gaussian σ 2 ground truth, re-projection, noisy tilts, WBP.",
        cluster=True,
    )  # fmt: skip


def _figure(value: float, fmt: str) -> str:
    """A number for the summary line, or "none" where there is none (no validation, no step)."""
    return format(value, fmt) if math.isfinite(value) else "none"


def _known(method: str) -> str | None:
    """``method`` if registered; else ``None`` (``--method``'s choices will refuse the name)."""
    return method if method in names() else None


#: Commands whose options depend on ``--method``: built for the method the command line names.
_PER_METHOD: dict[str, Callable[[str], click.Command]] = {"train": _train, "denoise": _denoise}

_COMMANDS: dict[str, Callable[[], click.Command]] = {
    "convert": _convert,
    "export": _export,
    "info": _info,
    "prior": _prior,
    "train": _train,
    "denoise": _denoise,
    "simulate": _simulate,
    "evaluate": evaluate_command,
    "score": score_command,
    "demo": demo_command,
    "import-scnet": import_scnet_command,
}


class _Group(click.Group):
    """Builds each command when it is looked up, from the configs and the method registry.

    ``train`` and ``denoise`` are built for the ``--method`` of the command line (or of its
    ``--config`` file): their options and ``--help`` are the engine's and that method's only.
    """

    _args: tuple[str, ...] = ()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        self._args = tuple(args[1:])
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _PER_METHOD:
            return _PER_METHOD[cmd_name](chosen_method(self._args, "scnet"))
        make = _COMMANDS.get(cmd_name)
        return make() if make else None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="scnet-dask")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug); tracebacks.")
def cli(verbose: int) -> None:
    """Self-supervised denoising of cryo-ET tomograms and vEM stacks, out of core."""
    _STATE["verbose"] = verbose
    setup_logging(verbose)


def _one_line(e: BaseException) -> str:
    """The user's line for an error: our messages as they are; an OS error names its file."""
    if isinstance(e, OSError) and getattr(e, "filename", None) and e.strerror:
        hint = "; choose a folder you can write to" if isinstance(e, PermissionError) else ""
        return f"{e.filename}: {e.strerror.lower()}{hint}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning errors into one line and a non-zero exit.

    With ``-v`` the traceback is printed too; an unexpected exception (a bug) always says so.
    """
    _STATE["verbose"] = 0
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
        if _STATE["verbose"]:
            traceback.print_exc()
        click.echo(f"scnet-dask: error: {_one_line(e)}", err=True)
        sys.exit(1)
    except Exception as e:  # a bug: one line, the traceback with -v
        if _STATE["verbose"]:
            traceback.print_exc()
        first = str(e).splitlines()[0] if str(e) else ""
        click.echo(
            f"scnet-dask: internal error: {type(e).__name__}: {first} (run with -v for the "
            "traceback and please report it)",
            err=True,
        )
        sys.exit(2)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
