"""Exceptions that the command line turns into one-line messages and exit codes."""

from __future__ import annotations


class ClisError(Exception):
    """Base class for errors a user can act on.

    The CLI prints ``str(error)`` on one line (no traceback) and exits with ``exit_code``.
    """

    exit_code = 2


class InputError(ClisError):
    """Bad input: a file that is missing, unreadable or fails validation."""


class LayoutFileError(InputError):
    """A layouts file failed validation; ``problems`` holds one line per problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        first = self.problems[0] if self.problems else f"{path}: invalid"
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        super().__init__(first + more)


class ModelUnavailableError(ClisError):
    """Model weights could not be found locally and could not be downloaded."""


def unavailable_with_remedy(exc: ModelUnavailableError, subject: str, remedy: str) -> ModelUnavailableError:
    """``exc`` restated on one line as "<subject> (<its first clause>); <remedy>": the loader's
    generic advice, after its first ";", gives way to the flag of the command at hand.

    >>> str(unavailable_with_remedy(ModelUnavailableError("not cached; run fetch"), "VLM x is not available",
    ...                             "pass --vlm PATH"))
    'VLM x is not available (not cached); pass --vlm PATH'
    """
    reason = " ".join(str(exc).split(";")[0].split())
    return ModelUnavailableError(f"{subject} ({reason}); {remedy}")


class ModelSpecError(ClisError):
    """A model spec string could not be understood."""
