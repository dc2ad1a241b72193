"""`--help` of every command reads like a well-kept command line (issue 10, section 4).

No Python types (`<bool>`, `<list[Path]>`, `<int range>`), no `{images}` on the usage line,
flags without a metavar, and `clis score` shows the defaults it really uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import pytest
import typer
from typer.testing import CliRunner

from clis.cli import app
from clis.cli._help import TidyHelpGroup, value_metavar

TYPE_NOISE = re.compile(r"<(?:bool|int|float|str|path|file|dir|list|tuple|datetime)\b[^>]*>|list\[|\{[a-z_]+\}")


def command_paths(command, prefix=()):
    """Every command and sub-command of the click tree, as argv prefixes (the root is ())."""
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from command_paths(sub, (*prefix, name))


PATHS = list(command_paths(typer.main.get_command(app)))


def help_text(path, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "220")
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, (path, result.output)
    return result.output


def test_the_walk_reaches_builtin_and_plugin_commands():
    names = {" ".join(p) for p in PATHS}
    for expected in ("score", "pick", "models list", "generate", "bench corrupt", "leaderboard build", "pool build"):
        assert expected in names
    assert len(PATHS) > 15


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "clis")
def test_help_has_no_type_noise(path, monkeypatch):
    text = help_text(path, monkeypatch)
    assert not TYPE_NOISE.findall(text), TYPE_NOISE.findall(text)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    # Arguments on the usage line are upper-case names: IMAGES, [RESULTS]...
    for word in usage.split("[OPTIONS]", 1)[-1].split():
        if word not in ("COMMAND", "[ARGS]..."):
            assert word.strip("[].") == word.strip("[].").upper(), usage
    # The help option is a flag: nothing between its names and its text.
    assert re.search(r"--help\s+-h\s+Show this message", text) or re.search(r"--help\s+Show this message", text)


def test_score_help_names_arguments_and_shows_the_real_defaults(monkeypatch):
    from clis.models import DEFAULT_CLIP, DEFAULT_DETECTOR
    from clis.scorer import ScoreConfig

    text = help_text(("score",), monkeypatch)
    assert "clis score [OPTIONS] IMAGES LAYOUTS" in text
    config = ScoreConfig()
    assert config.image_model == DEFAULT_CLIP and config.detector == DEFAULT_DETECTOR
    for option, default in (("--image-model", config.image_model), ("--detector", config.detector),
                            ("--batch-size", config.batch_size), ("--device", config.device)):
        line = next(line for line in text.splitlines() if f"{option} " in line)
        assert f"[default: {default}]" in line, line
    # Value options show a short word, flags none.
    assert re.search(r"--out\s+-o\s+PATH\s", text)
    assert re.search(r"--image-model\s+SPEC\s", text)
    assert re.search(r"--batch-size\s+N \[>=1\]", text)
    assert re.search(r"--resume\s+Keep finished", text)


def test_missing_argument_error_uses_the_upper_case_name(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["score"])
    assert result.exit_code == 2
    assert "Missing argument 'IMAGES'" in result.output


def test_value_metavar_rules():
    demo = typer.Typer(cls=TidyHelpGroup)

    @demo.command()
    def first(
        source: Path = typer.Argument(...),
        count: int = typer.Option(3, "--count"),
        ratio: Optional[float] = typer.Option(None, "--ratio"),
        name: list[str] = typer.Option([], "--name"),
        flag: bool = typer.Option(False, "--flag"),
        llm: str = typer.Option("x", "--llm"),
        fixed: str = typer.Option("x", "--fixed", metavar="WORDS"),
    ) -> None:
        pass

    @demo.command()
    def second() -> None:
        pass

    params = {p.name: p for p in typer.main.get_command(demo).commands["first"].params}
    assert {name: value_metavar(p) for name, p in params.items()} == {
        "source": "PATH", "count": "N", "ratio": "X", "name": "TEXT", "flag": None, "llm": "SPEC", "fixed": "WORDS",
    }
