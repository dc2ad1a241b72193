"""The ``clis`` command line.

Every module in this package that defines ``register(app)`` adds its commands to the app,
so a new command is one new file. Packages further up the dependency chain (``benchmarks``,
``leaderboard``) add sub-command groups through the ``clis.commands`` entry-point group
instead of being imported here: an entry point names either a ``typer.Typer`` (added as a
command group under the entry point's name) or a ``register(app)`` function.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import pkgutil
import sys
from pathlib import Path
from typing import Iterable, Optional

import typer
from rich.console import Console

from clis import __version__
from clis.cli._help import TidyHelpGroup
from clis.errors import ClisError

err_console = Console(stderr=True, soft_wrap=True, highlight=False)

app = typer.Typer(
    name="clis",
    help="Score, pick and validate layout-conditioned synthetic images (CLIS-I and CLIS-L).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    cls=TidyHelpGroup,  # IMAGES LAYOUTS, --out PATH, flags without <bool>: see clis/cli/_help.py
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"clis {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Score, pick and validate layout-conditioned synthetic images (CLIS-I and CLIS-L)."""


def _register_builtin_commands() -> None:
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


def _register_plugin_commands() -> None:
    for entry_point in importlib.metadata.entry_points(group="clis.commands"):
        try:
            plugin = entry_point.load()
        except ImportError as exc:
            # A plugin whose package is not installed must not break the core commands.
            err_console.print(f"[yellow]warning:[/] command {entry_point.name!r} unavailable: {exc}")
            continue
        if isinstance(plugin, typer.Typer):
            app.add_typer(plugin, name=entry_point.name)
        else:
            plugin(app)


_register_builtin_commands()
_register_plugin_commands()


def fail(message: str, code: int = 2) -> "typer.Exit":
    """Print a one-line error and return the ``typer.Exit`` to raise."""
    # The message holds user strings (paths, ids, "[x, y, w, h]"): never read as markup.
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", markup=True)
    return typer.Exit(code)


def warn(lines: Iterable[str]) -> None:
    """Print each line as a one-line ``warning:`` on stderr; ``clis score`` and ``clis pick`` share
    it so a run's warnings (truncated texts, demo-only or changed candidates) read the same."""
    for line in lines:
        err_console.print(f"warning: {line}", markup=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="clis", standalone_mode=True)
    except ClisError as exc:
        err_console.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: output written so far is kept", markup=False)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("CLIS_DEBUG"):
            raise
        where = ""
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is not None:
            where = f" (at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})"
        message = " ".join(str(exc).split()) or type(exc).__name__
        err_console.print(
            f"error: unexpected {type(exc).__name__}: {message}{where}; set CLIS_DEBUG=1 for the traceback "
            "and please report it",
            markup=False,
        )
        sys.exit(3)
