"""Helpers shared by the CLI commands: YAML configs mirrored on options, logging, errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import BaseModel, ValidationError

from scnet_dask.config import format_validation_error, load_yaml
from scnet_dask.errors import InputError

__all__ = ["config_option", "build_config", "setup_logging"]

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
