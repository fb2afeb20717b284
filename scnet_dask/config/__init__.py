"""Pydantic configs for every command (unknown keys rejected), loadable from YAML.

A command's ``--config FILE.yaml`` takes the same keys as its command-line options, with dashes
written as underscores; options given on the command line win. A method's own options are
validated by the method (:mod:`scnet_dask.methods`), so this layer sits above the methods.
"""

from scnet_dask.config.cluster import ClusterConfig
from scnet_dask.config.common import (
    Device,
    StrictModel,
    VoxelSize,
    format_validation_error,
    load_yaml,
    method_options,
    parse_voxel_size,
)
from scnet_dask.config.dataset import DATASET_FIELDS, DatasetConfig
from scnet_dask.config.denoise import DenoiseConfig
from scnet_dask.config.score import ScoreConfig
from scnet_dask.config.train import PriorConfig, TrainConfig
from scnet_dask.config.volume import (
    ConvertConfig,
    DemoConfig,
    ExportConfig,
    InfoConfig,
    SimulateConfig,
)

__all__ = [
    "ClusterConfig",
    "Device",
    "StrictModel",
    "VoxelSize",
    "format_validation_error",
    "load_yaml",
    "method_options",
    "parse_voxel_size",
    "DATASET_FIELDS",
    "DatasetConfig",
    "DenoiseConfig",
    "PriorConfig",
    "ScoreConfig",
    "TrainConfig",
    "ConvertConfig",
    "DemoConfig",
    "ExportConfig",
    "InfoConfig",
    "SimulateConfig",
]
