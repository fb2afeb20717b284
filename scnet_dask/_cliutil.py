"""Helpers shared by the CLI commands: YAML configs mirrored on options, logging, errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from scnet_dask.config import format_validation_error, load_yaml
from scnet_dask.errors import InputError

__all__ = ["config_option", "build_config", "setup_logging", "cluster_options", "on_cluster"]

CLUSTER_KEYS = (
    "cluster",
    "workers",
    "threads_per_worker",
    "jobs",
    "gpus_per_job",
    "dashboard_address",
    "worker_logs",
)

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


def config_option(model: type[BaseModel]) -> Callable[[F], F]:
    """Add ``--config FILE.yaml`` whose keys mirror the command's options.

    The file is validated against ``model`` (unknown keys are errors) and its values become the
    defaults of the options, so the command line still wins.
    """

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if not value:
            return
        data = load_yaml(value)
        fields = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
        fields |= set(CLUSTER_KEYS)
        unknown = sorted(set(data) - fields)
        if unknown:
            raise click.BadParameter(
                f"{value}: unknown key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(fields))}",
                ctx=ctx,
                param=param,
            )
        ctx.default_map = {**(ctx.default_map or {}), **data}

    def decorator(f: F) -> F:
        return click.option(
            "--config",
            type=click.Path(exists=True, dir_okay=False),
            is_eager=True,
            expose_value=False,
            callback=callback,
            help="YAML file whose keys mirror these options (command-line options win).",
        )(f)

    return decorator


def build_config(config_cls: type[M], /, **kwargs: Any) -> M:
    """Validate command options into a config model, as one clear error line on failure."""
    try:
        return config_cls(**kwargs)
    except ValidationError as e:
        raise InputError(format_validation_error(e)) from e


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"scnet-dask: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbosity: int) -> None:
    """Log to stderr: warnings by default, info with -v, debug with -vv."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("scnet_dask")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def cluster_options(f: F) -> F:
    """The shared ``--cluster`` option family (see :mod:`scnet_dask.cluster`)."""
    opts = [
        click.option(
            "--cluster",
            default="threads",
            show_default=True,
            help="threads | local | slurm | pbs | lsf | sge | tcp://HOST:PORT.",
        ),
        click.option("--workers", type=int, default=None, help="Workers of --cluster local."),
        click.option(
            "--threads-per-worker", type=int, default=1, show_default=True, help="Per worker."
        ),
        click.option("--jobs", type=int, default=1, show_default=True, help="Batch jobs."),
        click.option(
            "--gpus-per-job", type=int, default=0, show_default=True, help="GPUs per batch job."
        ),
        click.option(
            "--dashboard-address",
            default="127.0.0.1:8787",
            show_default=True,
            help="Dashboard of a started scheduler (':0' = any free port).",
        ),
        click.option(
            "--worker-logs",
            type=click.Path(path_type=Path),
            default=None,
            help="Folder for the workers' log files.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


@contextmanager
def on_cluster(kwargs: dict[str, Any]) -> Iterator[Any]:
    """Pop the cluster options from ``kwargs``, run the body on that cluster; yield its client.

    The client is ``None`` for ``--cluster threads``.
    """
    from scnet_dask.cluster import ClusterSpec, cluster_client

    spec = ClusterSpec(
        kind=kwargs.pop("cluster"),
        workers=kwargs.pop("workers"),
        threads_per_worker=kwargs.pop("threads_per_worker"),
        jobs=kwargs.pop("jobs"),
        gpus_per_job=kwargs.pop("gpus_per_job"),
        dashboard_address=kwargs.pop("dashboard_address"),
        log_dir=kwargs.pop("worker_logs"),
    )
    with cluster_client(spec) as client:
        if client is not None:
            click.echo(f"scnet-dask: Dask dashboard: {client.dashboard_link}", err=True)
        yield client
