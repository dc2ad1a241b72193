"""Generator names (``clis generate --generator NAME``) and the adapters behind them.

Built-in adapters are imported only when asked for, so ``shapes`` and ``copy-paste`` work
without diffusers installed and listing the names costs nothing.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from clis.errors import InputError

from generators.base import GeneratorAdapter

_BUILTIN: dict[str, str] = {
    "gligen": "generators.gligen:GligenGenerator",
    "sd": "generators.sd:StableDiffusionGenerator",
    "instancediffusion": "generators.instancediffusion:InstanceDiffusionGenerator",
    "copy-paste": "generators.copy_paste:CopyPasteGenerator",
    "shapes": "generators.shapes:ShapesGenerator",
}
_REGISTERED: dict[str, type[GeneratorAdapter]] = {}


def register_generator(name: str, adapter: type[GeneratorAdapter]) -> None:
    """Make ``adapter`` available as ``--generator name`` (for adapters outside this package)."""
    if not (isinstance(adapter, type) and issubclass(adapter, GeneratorAdapter)):
        raise TypeError(f"{adapter!r} is not a GeneratorAdapter subclass")
    _REGISTERED[name] = adapter


def available_generators() -> list[str]:
    return sorted({*_BUILTIN, *_REGISTERED})


def get_generator_class(name: str) -> type[GeneratorAdapter]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise InputError(f"unknown generator {name!r} (available: {', '.join(available_generators())})")
    module_name, class_name = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_generator(name: str, **options: Any) -> GeneratorAdapter:
    """Build the adapter ``name`` with ``options``; options it does not take are an error.

    Options whose value is ``None`` mean "not given" and are left to the adapter's defaults.
    """
    adapter_class = get_generator_class(name)
    given = {k: v for k, v in options.items() if v is not None}
    accepted = set()
    for klass in adapter_class.__mro__:
        if "__init__" in vars(klass):
            accepted |= set(inspect.signature(klass.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = sorted(set(given) - accepted)
    if unknown:
        names = ", ".join("--" + u.replace("_", "-") for u in unknown)
        raise InputError(f"generator {name!r} does not take {names}")
    return adapter_class(**given)
