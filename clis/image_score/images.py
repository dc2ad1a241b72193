"""Reading candidate images safely, and a background loader that keeps the encoder busy.

Every way an image can be unusable (missing, not an image, truncated, too many pixels, too
elongated to resize) ends as an :class:`ImageReadError` with a one-line reason, so a scoring
run records it for that candidate and goes on.
"""

from __future__ import annotations

import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, TypeVar, Union

from PIL import Image, UnidentifiedImageError

# 40 megapixels: larger than any generator output and than most photos, and small enough that
# one decoded RGB image (120 MB) cannot exhaust memory when several are in flight.
DEFAULT_MAX_PIXELS = 40_000_000

ImageInput = Union[str, Path, Image.Image]

T = TypeVar("T")
R = TypeVar("R")


class ImageReadError(Exception):
    """A candidate image that cannot be scored; ``str()`` is a one-line reason."""


def one_line(exc: BaseException) -> str:
    """An exception as one line of text (its type name when it has no message)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def check_size(name: str, width: int, height: int, max_pixels: int, resize_side: Optional[int] = None) -> None:
    """Raise ImageReadError when an image of this size must not be decoded or transformed.

    Two limits, both from the header size alone: the decoded pixels, and, with
    ``resize_side``, the pixels after CLIP's transform resizes the *short* side to
    ``resize_side``. The second catches images that are small but very elongated: a
    2,000,000x1 strip has only 2 M pixels, yet resizing its short side to 224 would make a
    448,000,000x224 image and exhaust memory.
    """
    pixels = width * height
    if pixels > max_pixels:
        raise ImageReadError(
            f"{name}: {width}x{height} = {pixels} pixels exceeds the limit of {max_pixels} (raise it with --max-pixels)"
        )
    if resize_side is None:
        return
    short, long = min(width, height), max(width, height)
    if short < 1:
        raise ImageReadError(f"{name}: {width}x{height} has no pixels")
    resized_long = resize_side * long // short  # what the shortest-edge resize makes of the long side
    if resize_side * resized_long > max_pixels:
        raise ImageReadError(
            f"{name}: {width}x{height} is too elongated (aspect ratio {long / short:.0f}:1): resizing its short "
            f"side to the model's {resize_side} px would make {resize_side * resized_long} pixels, past the limit "
            f"of {max_pixels}"
        )


def open_image(
    image: ImageInput, max_pixels: int = DEFAULT_MAX_PIXELS, resize_side: Optional[int] = None
) -> Image.Image:
    """Decode ``image`` (a path or a PIL image) fully into RGB, or raise ImageReadError.

    The size limits of :func:`check_size` are checked from the file header, before any pixel
    is decoded.

    Example:
        >>> open_image("no/such/file.png")
        Traceback (most recent call last):
        ...
        clis.image_score.images.ImageReadError: no/such/file.png: file not found
    """
    if isinstance(image, Image.Image):
        check_size("<image>", image.width, image.height, max_pixels, resize_side)
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
                check_size(str(path), handle.width, handle.height, max_pixels, resize_side)
                handle.load()
                return handle.convert("RGB")
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file (PIL cannot identify it)") from None
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: {one_line(exc)}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated files raise OSError("image file is truncated ..."), broken headers SyntaxError.
        raise ImageReadError(f"{path}: corrupt or truncated image ({one_line(exc)})") from None


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
