"""Fixtures of the adversarial tests: valid inputs, and ``clis`` runs that record what they did.

``run_clis(args)`` runs ``clis ARGS`` in-process as ``pipeline_helpers.run_cli`` does, but
keeps stdout and stderr apart and records every model the run loads. A path that can block a
reader (a FIFO waits for a writer) or that never ends (/dev/zero) is run with
``forked=True``: the same call in a forked child under a time and a memory limit, so that a
command that reads it is a failing test instead of a hung or killed session.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import corpus

# The most address space a run may add to what the test process already holds: enough for
# tiny models, far too little to read /dev/zero into memory.
EXTRA_ADDRESS_SPACE = 3 * 1024**3
STATUS_TIMED_OUT = -1


@dataclass
class Run:
    """What ``clis ARGS`` did: exit code (``STATUS_TIMED_OUT`` when killed), stdout, stderr,
    and the specs of the models it loaded."""

    args: list[str]
    code: int
    out: str
    err: str
    models_loaded: list[str] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        """The non-empty lines on stderr."""
        return [line for line in self.err.splitlines() if line.strip()]

    def describe(self) -> str:
        return f"clis {' '.join(self.args)}\nexit {self.code}\n--- stderr ---\n{self.err}--- stdout ---\n{self.out}"


def _address_space() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _patches(loads: list[str]) -> list[tuple[object, str, object]]:
    """(module, name, value) to set for a run: every model goes through
    ``clis.models.load_model``, which records each spec before it loads; typer's app-to-click
    conversion returns the command built once (see ``_warm_imports``)."""
    import typer.main

    import clis.models
    from clis.cli import app
    from clis.models import registry

    real_load, build = registry.load_model, typer.main.get_command

    def recording_load(spec, *more, **kwargs):
        loads.append(str(spec))
        return real_load(spec, *more, **kwargs)

    patches = [(clis.models, "load_model", recording_load), (registry, "load_model", recording_load)]
    if _click_command is not None:
        patches.append((typer.main, "get_command",
                        lambda typer_app: _click_command if typer_app is app else build(typer_app)))
    return patches


def _exit_code(call) -> int:
    try:
        call()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def _child(args: list[str], out_fd: int, err_fd: int, loads_path: str, timeout: float) -> int:
    import io

    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # pytest-timeout's handler must not run here
    signal.alarm(max(1, int(timeout)))
    limit = _address_space() + EXTRA_ADDRESS_SPACE
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8", write_through=True)
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""))
    loads: list[str] = []
    for module, name, value in _patches(loads):
        setattr(module, name, value)
    from clis.cli import main

    try:
        code = _exit_code(lambda: main(args))
    finally:
        Path(loads_path).write_text("".join(f"{spec}\n" for spec in loads), encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def run_forked(args: list[str], timeout: float = 60) -> Run:
    """Run ``clis ARGS`` in a forked child; see the module docstring."""
    args = [str(a) for a in args]
    with tempfile.TemporaryDirectory(prefix="clis-run-") as folder:
        out_path, err_path, loads_path = (Path(folder) / name for name in ("out", "err", "loads"))
        with open(out_path, "wb") as out_file, open(err_path, "wb") as err_file:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                code = 4
                try:
                    code = _child(args, out_file.fileno(), err_file.fileno(), str(loads_path), timeout)
                except BaseException:  # noqa: BLE001 - the child must never return into pytest
                    import traceback

                    traceback.print_exc()
                    code = 4
                finally:
                    os._exit(code)
            deadline = time.monotonic() + timeout + 5
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    _, status = os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
        else:
            code = STATUS_TIMED_OUT
        err = err_path.read_text(encoding="utf-8", errors="replace")
        if code == STATUS_TIMED_OUT:
            err += f"[killed by signal {os.WTERMSIG(status)}: ran past {timeout} s, or past its memory limit]\n"
        loads = loads_path.read_text(encoding="utf-8").split() if loads_path.exists() else []
        return Run(args, code, out_path.read_text(encoding="utf-8", errors="replace"), err, loads)


# What the commands import when they run: imported once here, before the first fork, so that
# each run costs its own work only.
WARM_IMPORTS = (
    "clis.cli", "clis.formats", "clis.scorer", "clis.pick", "clis.plan", "clis.layout_score.scorer",
    "clis.layout_score.precomputed", "clis.layout_score.pool", "benchmarks.scorefile", "benchmarks.correlate",
    "benchmarks.pairwise", "benchmarks.buckets", "benchmarks.compare", "benchmarks.corrupt", "benchmarks.layouts",
    "leaderboard.site", "generators.runner",
)


# typer turns the app into a click command on every call (most of a quick run's time); it is
# built once here and every forked run uses its own copy of it.
_click_command = None


@pytest.fixture(scope="session")
def _warm_imports():
    import importlib

    import typer.main

    global _click_command
    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # a module renamed by a fix: the runs import what they need
            pass
    from clis.cli import app

    _click_command = typer.main.get_command(app)


@pytest.fixture
def run_clis(capsys, monkeypatch, _warm_imports):
    """``run_clis(args, forked=False, timeout=60) -> Run``; see the module docstring."""

    def run(args: list, forked: bool = False, timeout: float = 60) -> Run:
        args = [str(a) for a in args]
        if forked:
            return run_forked(args, timeout)
        from clis.cli import main

        loads: list[str] = []
        with monkeypatch.context() as patch:
            for module, name, value in _patches(loads):
                patch.setattr(module, name, value, raising=False)
            capsys.readouterr()
            code = _exit_code(lambda: main(args))
            captured = capsys.readouterr()
        return Run(args, code, captured.out, captured.err, loads)

    return run


# --- input snapshots ------------------------------------------------------------------------


def snapshot(*roots: Path) -> dict[str, str]:
    """``{path: sha256}`` of every regular file under ``roots`` (files or folders), symlinks
    recorded by their target, so that any change to an input shows."""
    found: dict[str, str] = {}
    for root in roots:
        if root.is_symlink():
            found[str(root)] = "-> " + os.readlink(root)
            continue
        if not root.exists():
            continue
        paths = [root] if not root.is_dir() else sorted(root.rglob("*"))
        for path in paths:
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_fifo():
                found[str(path)] = "fifo"
            elif path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                found[str(path)] = "folder"
    return found


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Inputs that are gone or differ (new files are another question)."""
    return [path for path, digest in before.items() if after.get(path) != digest]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def baseline_template(tmp_path_factory) -> corpus.Baseline:
    return corpus.write_baseline(tmp_path_factory.mktemp("baseline"))


@pytest.fixture
def baseline(baseline_template, tmp_path) -> corpus.Baseline:
    """A fresh copy of the valid inputs for one test: a command that wrongly writes into its
    inputs cannot spoil the next test."""
    root = tmp_path / "inputs"
    shutil.copytree(baseline_template.root, root, symlinks=True)
    return corpus.Baseline(**{
        name: root / Path(value).relative_to(baseline_template.root)
        for name, value in vars(baseline_template).items() if name != "root"
    }, root=root)
