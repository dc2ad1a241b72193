"""Stages for the Ray fault tests, importable by Ray's workers (tests/ is on their PYTHONPATH)."""

from __future__ import annotations

import os

from clis.engines.stages import ImageStage, Stage

POISON = "horse"  # the layout whose candidate crashes its worker


class PoisonStage(ImageStage):
    """Scores as ImageStage does, except that a batch holding the poison candidate kills the
    worker process outright (no exception, no cleanup), as a segfault or the OOM killer would."""

    def process(self, rows: list[dict]) -> list[dict]:
        if any(row["layout"]["id"] == POISON for row in rows):
            os._exit(1)
        return super().process(rows)


class Square(Stage):
    """A stage without models, for the order test: each row's ``x`` squared."""

    def process(self, rows: list[dict]) -> list[dict]:
        return [{"square": row["x"] ** 2} for row in rows]

    @staticmethod
    def failure(row: dict, reason: str) -> dict:
        return {"square": None, "error": reason}
