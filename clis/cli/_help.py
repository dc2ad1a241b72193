"""Help that reads like a well-kept command line: ``IMAGES LAYOUTS``, ``--out PATH``, ``--resume``.

typer 0.29 renders every parameter's Python type as its metavar (``--resume <bool>``,
``--weight <list[str]>``, ``--batch-size <int range> [x>=1]``) and wraps required arguments
in braces on the usage line (``clis score [OPTIONS] {images} {layouts}``). Its parameters
take no class argument, so instead of repeating ``metavar=`` on every option, the root group
of ``clis`` (:class:`TidyHelpGroup`) walks the finished command tree once and gives every
parameter (plugin commands and the lazily made ``--help`` option included) the display
rules below:

- arguments show their upper-case name (``IMAGES``, ``[RESULTS]...``) and no type;
- boolean flags and counters show no metavar;
- value options show a short word: ``PATH``/``FILE``/``DIR``, ``N`` (integers), ``X``
  (numbers), ``TEXT``, ``SPEC`` for model specs, ``DEVICE``, or their choices ``a|b``;
  an explicit ``metavar=`` still wins;
- a number range reads ``N [>=1]`` or ``X [0.5..0.999]``;
- a default given as text (``show_default="32"``) reads ``[default: 32]``.
"""

from __future__ import annotations

import datetime as _dt
import enum
from pathlib import PurePath
from types import SimpleNamespace
from typing import Any, Optional, get_args

from typer.core import TyperArgument, TyperGroup, TyperOption

# Options named like this take a model spec (or a device) whatever their Python type says.
METAVAR_BY_NAME = {
    "image_model": "SPEC", "detector": "SPEC", "sam_model": "SPEC", "llm": "SPEC", "text_embedder": "SPEC",
    "model": "SPEC", "device": "DEVICE",
}


def _element_type(param: Any) -> Any:
    annotation = param.type_descriptor.annotation
    if param.type_descriptor.is_list:
        args = get_args(annotation)
        return args[0] if len(args) == 1 else str
    return annotation


def _word(annotation: Any, param: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, PurePath) or param.type_descriptor.is_path:
        return {"file": "FILE", "dir": "DIR"}.get(param.type_descriptor.path_type, "PATH")
    if annotation is bool:
        return "BOOL"
    if annotation is int:
        return "N"
    if annotation is float:
        return "X"
    if annotation is _dt.datetime:
        return "DATE"
    if annotation is str:
        return "TEXT"
    return getattr(annotation, "__name__", "VALUE").upper()


def value_metavar(param: Any) -> Optional[str]:
    """The word shown after an option (or for an argument), or None for flags."""
    if param.metavar is not None:
        return param.metavar
    if isinstance(param, TyperOption) and (param.is_flag or param.count):
        return None
    if param.name in METAVAR_BY_NAME and isinstance(param, TyperOption):
        return METAVAR_BY_NAME[param.name]
    descriptor = param.type_descriptor
    if descriptor.is_choice and descriptor.choices:
        return "|".join(str(c.value if isinstance(c, enum.Enum) else c) for c in descriptor.choices)
    if descriptor.is_tuple:
        return " ".join(_word(arg, param) for arg in get_args(descriptor.annotation))
    return _word(_element_type(param), param)


def _range_text(low: Any, high: Any) -> Optional[str]:
    if low is None and high is None:
        return None
    if low is None:
        return f"<={high}"
    if high is None:
        return f">={low}"
    return f"{low}..{high}"


class TidyArgument(TyperArgument):
    """An argument shown as its upper-case name, with no type column."""

    @property
    def display_name_raw(self) -> str:
        return self.metavar if self.metavar is not None else (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> Optional[str]:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def _get_number_range_help_str(self) -> Optional[str]:
        return _range_text(self.min, self.max)


class TidyOption(TyperOption):
    """An option shown with a short metavar, none for flags."""

    def display_type_rich(self, ctx: Any) -> Optional[str]:
        return value_metavar(self)

    def _get_default_string(self, *, ctx: Any, show_default_is_str: bool, default_value: Any) -> str:
        # show_default="32" reads [default: 32], not click's [default: (32)]
        if show_default_is_str:
            return str(self.show_default)
        return super()._get_default_string(
            ctx=ctx, show_default_is_str=show_default_is_str, default_value=default_value
        )

    def _get_number_range_help_str(self) -> Optional[str]:
        if self.count:
            return None
        return _range_text(self.min, self.max)


def tidy_command_tree(command: Any, help_option_names: Optional[list[str]] = None) -> None:
    """Give every parameter under ``command`` the display rules of this module (in place)."""
    settings = getattr(command, "context_settings", None) or {}
    names = list(settings.get("help_option_names") or help_option_names or ["--help"])
    for param in getattr(command, "params", ()):
        _tidy_param(param)
    if getattr(command, "add_help_option", False):
        # click makes --help on first use from the context's names; make it now, the same way.
        help_option = command.get_help_option(SimpleNamespace(help_option_names=names))
        if help_option is not None:
            _tidy_param(help_option)
    for sub in getattr(command, "commands", {}).values():
        tidy_command_tree(sub, names)


def _tidy_param(param: Any) -> None:
    if type(param) is TyperArgument:
        param.__class__ = TidyArgument
    elif type(param) is TyperOption:
        param.__class__ = TidyOption


class TidyHelpGroup(TyperGroup):
    """The root group of ``clis``: tidies the help of the whole command tree once it is built."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        tidy_command_tree(self)
