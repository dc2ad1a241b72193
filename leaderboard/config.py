"""The leaderboard's small, plain-data config: title, metrics to show and their order.

The default config is ``leaderboard/config.json``, kept next to the submitted result files in
``leaderboard/results/``. ``clis leaderboard build --config FILE`` reads another one.

Example:
    >>> config = LeaderboardConfig(metrics=["clis_mean", "clis_i_mean"])
    >>> config.decimals_for("clis_mean")
    2
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leaderboard.schema import ResultFileError, read_json

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG_PATH = PACKAGE_DIR / "config.json"
DEFAULT_RESULTS_DIR = PACKAGE_DIR / "results"


class ConfigError(ResultFileError):
    """The leaderboard config file is malformed."""


class LeaderboardConfig(BaseModel):
    """What the board shows and how.

    - ``metrics``: metric keys to show, in this order; empty shows every metric of the result
      files in the order the files define them.
    - ``sort_by``: metric keys tried in turn for the default sort (the first one a table has
      wins); the direction follows the metric's ``higher_is_better``.
    - ``decimals`` / ``metric_decimals``: digits after the point, overall and per metric; the
      HTML table and the Markdown export use the same formatting.
    - ``thumbnails``: how many best and how many worst candidates each row page shows.
    - ``max_instance_rows``: per-instance rows shown in a row page (all of them go to its CSV).
    """

    model_config = ConfigDict(extra="forbid")

    title: str = "CLIS leaderboard"
    description: str = ""
    metrics: list[str] = Field(default_factory=list)
    sort_by: list[str] = Field(default_factory=lambda: ["clis_mean", "clis"])
    decimals: int = Field(default=2, ge=0, le=8)
    metric_decimals: dict[str, int] = Field(default_factory=dict)
    thumbnails: int = Field(default=4, ge=0, le=50)
    max_instance_rows: int = Field(default=500, ge=0)

    def decimals_for(self, key: str) -> int:
        return self.metric_decimals.get(key, self.decimals)


def load_config(path: Path | str | None = None) -> LeaderboardConfig:
    """Read a config file (the packaged ``config.json`` when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    raw = read_json(path, "leaderboard config")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a leaderboard config must be a JSON object")
    try:
        return LeaderboardConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {field}: {first['msg']}") from None
