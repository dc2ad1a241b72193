"""Where a command's model work runs, as plain data: ``--engine local|ray`` and its sizing.

``local`` is one process on this machine (today's path). ``ray`` runs the model stages as
Ray Data actors (``docs/scale.md``), on a cluster at ``address`` or on a Ray started on this
machine. The engine decides how a run goes, never what it computes: a resumed run may change it,
and ``--engine ray`` writes the same records as ``--engine local``.

Example:
    >>> engine_config_from_flags("ray", None, 2, None, None)
    EngineConfig(name='ray', address=None, workers=2, gpus_per_worker=0.0, cpus_per_worker=1.0)
    >>> engine_config_from_flags(None, "ray://head:10001", None, None, None)
    Traceback (most recent call last):
    ...
    clis.errors.InputError: --ray-address is read only with --engine ray, and this run uses --engine local
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from clis.errors import InputError

ENGINES = ("local", "ray")


class EngineConfig(BaseModel):
    """``name``: local or ray; the rest sizes the Ray actor pool (read only with ray)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["local", "ray"] = "local"
    address: Optional[str] = None  # a running cluster (ray://host:10001, auto); None starts a local Ray
    workers: int = Field(1, ge=1)  # actors in the pool: each loads the models once
    gpus_per_worker: float = Field(0.0, ge=0)
    cpus_per_worker: float = Field(1.0, gt=0)


def engine_config_from_flags(engine: Optional[str], ray_address: Optional[str], workers: Optional[int],
                             gpus_per_worker: Optional[float], cpus_per_worker: Optional[float]) -> EngineConfig:
    """The engine the flags ask for; a Ray flag without ``--engine ray`` is refused in one line,
    as it would be ignored silently otherwise."""
    name = engine or "local"
    if name not in ENGINES:
        raise InputError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    given = {"--ray-address": ray_address, "--workers": workers, "--gpus-per-worker": gpus_per_worker,
             "--cpus-per-worker": cpus_per_worker}
    if name != "ray":
        flag = next((flag for flag, value in given.items() if value is not None), None)
        if flag is not None:
            raise InputError(f"{flag} is read only with --engine ray, and this run uses --engine {name}")
        return EngineConfig()
    for flag, value, least in (("--workers", workers, 1), ("--gpus-per-worker", gpus_per_worker, 0),
                               ("--cpus-per-worker", cpus_per_worker, None)):
        if value is None:
            continue
        if value != value or value in (float("inf"), float("-inf")):
            raise InputError(f"{flag} {value!r}: not a finite number")
        if (least is not None and value < least) or (least is None and value <= 0):
            raise InputError(f"{flag} {value!r}: must be {'>= ' + str(least) if least is not None else '> 0'}")
    values = {"name": "ray", "address": ray_address, "workers": workers, "gpus_per_worker": gpus_per_worker,
              "cpus_per_worker": cpus_per_worker}
    return EngineConfig(**{key: value for key, value in values.items() if value is not None})
