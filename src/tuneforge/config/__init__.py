"""Typed configuration: schema, loading, overrides, hashing."""

from tuneforge.config.load import apply_override, config_hash, dump_config, load_config
from tuneforge.config.schema import Config

__all__ = ["Config", "apply_override", "config_hash", "dump_config", "load_config"]
