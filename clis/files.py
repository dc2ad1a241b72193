"""Writing output files so that a run killed at any moment leaves the old file or the new one,
and reading back the manifests written beside them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Iterator


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` when the block ends without an exception: written to
    a temporary file beside ``path``, flushed to disk, then ``os.replace``d, piece by piece, so a
    file of a million lines is never held in memory. On an exception ``path`` is left as it was.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.jsonl"
        >>> with atomic_writer(path) as handle:
        ...     _ = handle.write(b"1\\n"), handle.write(b"2\\n")
        >>> path.read_bytes(), [f.name for f in path.parent.iterdir()]
        (b'1\\n2\\n', ['a.jsonl'])
    """
    path = Path(path)
    # Beside the target (os.replace cannot cross file systems), unique per writer; mode 0o666
    # less the umask, as open() gives, where tempfile.mkstemp would make it private (0o600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` through :func:`atomic_writer`, in UTF-8 with the text's own line ends.

    A reader, or a run ended by SIGKILL, OOM or power loss, never sees half a file.

    Example:
        >>> import tempfile, pathlib
        >>> p = write_text_atomic(pathlib.Path(tempfile.mkdtemp()) / "a.json", "[]")
        >>> p.read_text(), [f.name for f in p.parent.iterdir()]
        ('[]', ['a.json'])
    """
    with atomic_writer(path) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (input hashes, weight fingerprints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path``, symlinks resolved, is ``folder`` or lies under it: the one test of
    "does this stay within what the user named" (outputs inside IMAGES, a pick --out holding
    an input, a leaderboard image, a manifest entry that is about to be deleted)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def read_manifest(path: str | Path, why: str, hint: str) -> dict[str, Any]:
    """The JSON object in a manifest ``path`` that an earlier run wrote beside its output.

    ``why`` says what the manifest is needed for ("the settings of the earlier run"), ``hint``
    what the user can do instead; a missing, unreadable or non-object file is one InputError.
    """
    from clis.errors import InputError

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing, so {why} cannot be checked; {hint}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({' '.join(str(exc).split())}); {hint}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a clis manifest (not a JSON object); {hint}")
    return data


class SeenCandidates:
    """The line of every candidate (``layout_id``, ``image``) read so far from one scores file.

    Two runs writing into one file leave every record twice, and each reader of a scores file
    (``--resume``, ``clis pick``) must refuse such a file rather than count its images twice.
    """

    def __init__(self, path: str | Path, hint: str = "a scores file has one record per candidate", unit: str = "line"):
        self.path = path
        self.hint = hint
        self.unit = unit  # "row" for a Parquet scores table
        self._first: dict[tuple[str, str], int] = {}

    def add(self, record: dict, line: int) -> None:
        """Note ``record`` (read on ``line``); InputError naming both lines when its image was listed before."""
        from clis.errors import InputError

        image = record.get("image")
        if image is None:  # an invalid layout's error record has no image
            return
        # "./images/a.png" and "/abs/images/a.png" are one candidate spelled twice
        first = self._first.setdefault((record["layout_id"], os.path.abspath(image)), line)
        if first != line:
            raise InputError(
                f"{self.path}: {self.unit} {line}: image {image!r} of layout {record['layout_id']!r} is listed twice "
                f"(first on {self.unit} {first}); {self.hint}"
            )
