"""Reading candidate images safely, and a background loader that keeps the encoder busy.

Every way an image can be unusable (missing, not an image, truncated, too many pixels) ends
as an :class:`ImageReadError` with a one-line reason, so a scoring run records it for that
candidate and goes on.
"""

from __future__ import annotations

import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar, Union

from PIL import Image, UnidentifiedImageError

# 40 megapixels: larger than any generator output and than most photos, and small enough that
# one decoded RGB image (120 MB) cannot exhaust memory when several are in flight.
DEFAULT_MAX_PIXELS = 40_000_000

ImageInput = Union[str, Path, Image.Image]

T = TypeVar("T")
R = TypeVar("R")


class ImageReadError(Exception):
    """A candidate image that cannot be scored; ``str()`` is a one-line reason."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def open_image(image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``image`` (a path or a PIL image) fully into RGB, or raise ImageReadError.

    The pixel limit is checked from the file header, before any pixel is decoded.

    Example:
        >>> open_image("no/such/file.png")
        Traceback (most recent call last):
        ...
        clis.image_score.images.ImageReadError: no/such/file.png: file not found
    """
    if isinstance(image, Image.Image):
        pixels = image.width * image.height
        if pixels > max_pixels:
            raise ImageReadError(f"<image>: {image.width}x{image.height} = {pixels} pixels exceeds the limit of {max_pixels}")
        return image if image.mode == "RGB" else image.convert("RGB")
    path = Path(image)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():
            # Our own limit replaces PIL's decompression-bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                pixels = handle.width * handle.height
                if pixels > max_pixels:
                    raise ImageReadError(
                        f"{path}: {handle.width}x{handle.height} = {pixels} pixels exceeds the limit of "
                        f"{max_pixels} (raise it with --max-pixels)"
                    )
                handle.load()
                return handle.convert("RGB")
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (PIL cannot identify it)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: {_one_line(exc)}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated files raise OSError("image file is truncated ..."), broken headers SyntaxError.
        raise ImageReadError(f"{path}: corrupt or truncated image ({_one_line(exc)})") from None


def prefetch_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 2, depth: int = 16) -> Iterator[R]:
    """``map(fn, items)`` run in ``workers`` background threads, yielded in input order.

    At most ``depth`` results are in flight, so memory stays bounded on huge folders. Image
    decoding and resizing release the GIL, so threads overlap them with model forward passes.
    ``workers=0`` runs everything in the calling thread (useful for debugging).
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clis-loader") as pool:
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
