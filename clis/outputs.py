"""Checking a command's output paths before any work, and holding them while it writes.

Every command names its inputs and outputs once, up front, in ``check_paths``: an output that
is also an input (``--out layouts.json``) or another output (``--csv`` = ``--out``), a folder
where a file is written, a file where a folder is built, a parent that is a file, a device
such as ``/dev/full``, or a folder that cannot be written is one InputError *before* any model
loads, so no finished work is lost at the end. ``OutputLock`` then keeps a second run off the
same output while the first one writes.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "layouts.json").write_text("[]")
    2
    >>> check_paths(inputs={"LAYOUTS": folder / "layouts.json"},
    ...             outputs={"--out": folder / "layouts.json"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    clis.errors.InputError: --out names the same file as LAYOUTS (.../layouts.json); choose another --out
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Mapping

from clis.errors import InputError
from clis.files import is_inside

FILE = "file"
FOLDER = "folder"


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.abspath(a) == os.path.abspath(b)


def _writable_parent(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` must be a folder that this user can write."""
    parent = path.parent if str(path.parent) else Path(".")
    while not parent.exists():
        if parent.is_symlink():  # a dangling link as a parent
            raise InputError(f"{flag} {path}: {parent} is a broken link")
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{flag} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {path}: cannot write in {parent} (permission denied)")


def check_output(path: Path, flag: str, kind: str = FILE) -> None:
    """One output: a regular file (or nothing yet) for FILE, a folder (or nothing yet) for FOLDER."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            raise InputError(f"{flag} {path}: cannot be used ({exc.strerror or exc})") from None
        if kind == FILE:
            if stat.S_ISDIR(mode):
                raise InputError(f"{flag} {path}: is a folder; give a file name")
            if not stat.S_ISREG(mode):
                raise InputError(f"{flag} {path}: not a regular file (a device, FIFO or socket); give a file name")
            if not os.access(path, os.W_OK):
                raise InputError(f"{flag} {path}: cannot be written (permission denied)")
        elif not stat.S_ISDIR(mode):
            raise InputError(f"{flag} {path}: is a file; give a folder")
    _writable_parent(path, flag)


def check_paths(
    inputs: Mapping[str, Path | None] | None = None,
    outputs: Mapping[str, Path | None] | None = None,
    folders: Mapping[str, Path | None] | None = None,
    input_folders: Mapping[str, Path | None] | None = None,
) -> None:
    """Check every output file (``outputs``) and output folder (``folders``) of a command,
    keyed by the flag that names it, against each other and against its ``inputs``.

    An output file inside an output folder is fine (``--out dataset/``, its manifest inside),
    but no output may be an input, nor a second output. A file that already exists inside one
    of ``input_folders`` (``IMAGES``: a candidate image, the generation manifest) is an input too.
    """
    inputs = {flag: Path(p) for flag, p in (inputs or {}).items() if p is not None}
    files = {flag: Path(p) for flag, p in (outputs or {}).items() if p is not None}
    dirs = {flag: Path(p) for flag, p in (folders or {}).items() if p is not None}
    for flag, path in files.items():
        check_output(path, flag, FILE)
    for flag, path in dirs.items():
        check_output(path, flag, FOLDER)
    for folder_flag, folder in (input_folders or {}).items():
        if folder is None or not Path(folder).is_dir():
            continue
        for flag, path in files.items():
            if path.exists() and is_inside(path, folder):
                raise InputError(f"{flag} {path}: is a file inside {folder_flag} ({folder}), which it would replace; "
                                 f"choose another {flag}")
    named = list(files.items()) + list(dirs.items())
    for i, (flag, path) in enumerate(named):
        for in_flag, in_path in inputs.items():
            if _same(path, in_path):
                raise InputError(f"{flag} names the same file as {in_flag} ({path}); choose another {flag}")
        for other_flag, other in named[i + 1:]:
            if _same(path, other):
                raise InputError(f"{flag} and {other_flag} name the same path ({path}); give them different names")


class OutputLock:
    """An exclusive ``flock`` on ``.NAME.lock`` beside an output, held while a run writes it.

    A second run on the same output fails at once with one line, instead of both appending
    records. The lock dies with its process (SIGKILL included), so a stale lock file never
    blocks a later run; the file is removed on release. It is named after the output's real
    path, so a symlink or another spelling of the same file meets the same lock (a hard link,
    a second name of the same inode, does not).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "scores.jsonl"
        >>> with OutputLock(out):
        ...     OutputLock(out).acquire()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        clis.errors.InputError: .../scores.jsonl: another clis run is writing it (lock .../.scores.jsonl.lock); wait for it to end or choose another output
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        real = Path(os.path.realpath(self.path))
        self.lock_path = real.with_name(f".{real.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        import fcntl

        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise InputError(
                        f"{self.path}: another clis run is writing it (lock {self.lock_path}); "
                        "wait for it to end or choose another output"
                    ) from None
                raise
            # The holder before us may have removed the file between our open and our flock:
            # then our lock is on a file no one else will open, and we must try again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return self
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value):
    """A text cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab
    or CR first, as OWASP's CSV-injection guidance lists) gets a leading ``'``; numbers, and
    text that reads as a number (``-3``), stay as they are. Every CSV clis writes passes its
    cells through this.

    >>> csv_safe("=HYPERLINK(1)"), csv_safe("-3"), csv_safe("tea"), csv_safe(-3.0)
    ("'=HYPERLINK(1)", '-3', 'tea', -3.0)
    """
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def csv_safe_frame(frame):
    """A copy of a pandas DataFrame with every text cell (and column name) through ``csv_safe``."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_bool_dtype(out[column])):
            out[column] = out[column].map(csv_safe).astype(object)
    out.columns = [csv_safe(c) if isinstance(c, str) else c for c in out.columns]
    return out


def write_csv_frame(frame, path) -> None:
    """Write a pandas DataFrame as a CSV that a spreadsheet opens as data, atomically: text
    cells through ``csv_safe_frame``, and lines ending in CRLF (RFC 4180), because only then
    does the csv module quote a CR inside a cell, which a reader would otherwise take for the
    start of a new row (one that could begin with a formula)."""
    from clis.files import write_text_atomic

    write_text_atomic(path, csv_safe_frame(frame).to_csv(index=False, lineterminator="\r\n"))


def folder_beside(target: Path, kind: str = "staging") -> Path:
    """A new hidden folder beside ``target`` (same file system, so renames into it are atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = target.with_name(f".{target.name}.{kind}-{secrets.token_hex(4)}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def commit_staged(staging: Path, target: Path, names: list[str]) -> None:
    """Put the output built in ``staging`` at ``target``: one rename when ``target`` does not
    exist (or is an empty folder), else entry by entry (``names``, those ``staging`` holds),
    each earlier entry moved aside first and put back if a later rename fails, so the user's
    other files in an earlier output stay and a failed commit leaves the earlier one whole."""
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.rename(staging, target)
        return
    aside = folder_beside(target, "old")
    moved, placed = [], []
    try:
        for name in names:
            if (target / name).exists() or (target / name).is_symlink():
                os.rename(target / name, aside / name)
                moved.append(name)
            os.rename(staging / name, target / name)
            placed.append(name)
    except BaseException:
        for name in placed:
            with contextlib.suppress(OSError):
                _remove(target / name)
        for name in moved:
            with contextlib.suppress(OSError):
                os.rename(aside / name, target / name)
        with contextlib.suppress(OSError):
            aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
