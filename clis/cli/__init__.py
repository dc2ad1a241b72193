"""The ``clis`` command line.

Every module in this package that defines ``register(app)`` adds its commands to the app,
so a new command is one new file. Packages further up the dependency chain (``benchmarks``,
``leaderboard``) add sub-command groups through the ``clis.commands`` entry-point group
instead of being imported here: an entry point names either a ``typer.Typer`` (added as a
command group under the entry point's name) or a ``register(app)`` function.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import pkgutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import typer
from rich.console import Console
from typer.exceptions import TyperException

from clis import __version__
from clis.cli._help import TidyHelpGroup
from clis.errors import ClisError

if TYPE_CHECKING:
    from rich.text import Text

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


# A run over 380k layouts must not print 380k warnings: the first ones, then a count. The
# full lists are in the run's manifest (layouts_without_images, truncation, ...).
WARNING_LIMIT = 10


def warn(lines: Iterable[str], limit: int = WARNING_LIMIT) -> None:
    """Print each line as a one-line ``warning:`` on stderr, the first ``limit`` of them and then
    one line counting the rest; ``clis score`` and ``clis pick`` share it so a run's warnings
    (truncated texts, demo-only or changed candidates) read the same."""
    lines = list(lines)
    for line in lines[:limit]:
        err_console.print(f"warning: {line}", markup=False)
    if len(lines) > limit:
        err_console.print(f"warning: ... and {len(lines) - limit} more warnings like these", markup=False)


def plain(value: object) -> "Text":
    """``value`` as rich text that is never read as markup: for table cells and titles that
    hold user strings (ids, labels, paths), where ``[red]`` must print as it is."""
    from rich.text import Text

    return Text(str(value))


class _Interruption:
    """Turns SIGINT, SIGTERM and SIGHUP into KeyboardInterrupt while a command runs, and remembers
    which one came, so that a run stopped either way marks its manifest ``interrupted`` and
    the user is told that the output so far is kept. (typer turns KeyboardInterrupt into a
    silent exit 130 before ``main`` could see it, hence the flag.)"""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        self.signal = signum
        raise KeyboardInterrupt

    def __enter__(self) -> "_Interruption":
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
            with contextlib.suppress(ValueError):  # not the main thread: leave Python's defaults
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2; a run
    stopped by SIGINT, SIGTERM or SIGHUP says so once and exits 128 + the signal's number."""
    interruption = _Interruption()
    with interruption:
        code = _run(argv)
    if interruption.signal is not None:
        name = signal.Signals(interruption.signal).name
        err_console.print(
            f"interrupted ({name}): the output written so far is kept; a command that takes --resume continues "
            "from it",
            markup=False,
        )
        code = 128 + interruption.signal
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    """Run the app; every way it can end becomes an exit code, with one line for each error."""
    try:
        # Not standalone: typer would print a usage error as a boxed panel of many lines,
        # with the user's value read as markup.
        code = app(args=argv, prog_name="clis", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C (main reports it), or EOF on a prompt
        return 130
    except TyperException as exc:  # typer's (vendored click's) usage errors: a bad option, a missing argument
        if type(exc).__name__ == "NoArgsIsHelpError":  # `clis bench` alone: its help, as click shows it
            exc.show()
            return exc.exit_code
        where = f" (see '{exc.ctx.command_path} --help')" if getattr(exc, "ctx", None) is not None else ""
        err_console.print(f"error: {' '.join(exc.format_message().split())}{where}", markup=False)
        return getattr(exc, "exit_code", 2)
    except ClisError as exc:
        err_console.print(f"error: {exc}", markup=False)
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
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
        return 3
