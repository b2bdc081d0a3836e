"""Typed run configuration: schema, YAML loading with dotted overrides, resolved dumps."""

from distdiff.config.loader import (
    ConfigError,
    apply_overrides,
    deep_merge,
    dump_yaml,
    from_dict,
    load_config,
    load_yaml,
    parse_override,
    to_dict,
)
from distdiff.config.schema import (
    DataConfig,
    DDGANConfig,
    DistributedConfig,
    EvalConfig,
    LDMConfig,
    OptimConfig,
    PerfConfig,
    RunConfig,
    SegConfig,
    StageConfig,
    TextConfig,
    VAEConfig,
)

__all__ = [
    "ConfigError", "apply_overrides", "deep_merge", "dump_yaml", "from_dict", "load_config", "load_yaml",
    "parse_override", "to_dict", "DataConfig", "DDGANConfig", "DistributedConfig", "EvalConfig", "LDMConfig",
    "OptimConfig", "PerfConfig", "RunConfig", "SegConfig", "StageConfig", "TextConfig", "VAEConfig",
]
