"""Where model work runs: ``--engine local|ray`` (see :mod:`clis.engines.config`, ``docs/scale.md``)."""

from clis.engines.config import ENGINES, EngineConfig, engine_config_from_flags

__all__ = ["ENGINES", "EngineConfig", "engine_config_from_flags"]
