"""README.md's two set-up commands stay true: CI runs the test command verbatim, and the main
job's command names files and sub-commands that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import clis.cli

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> dict[str, str]:
    """The first bash block after each bold "Install and run ..." line of the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = {}
    for title, command in re.findall(r"\*\*(Install and run [^*]+)\*\*.*?```bash\n(.*?)\n```", text, flags=re.S):
        found[title] = command.strip()
    return found


def test_readme_has_both_set_up_commands():
    titles = list(setup_commands())
    assert any("main job" in t for t in titles) and any("tests" in t for t in titles), titles


def test_ci_runs_the_readme_test_command_verbatim():
    command = next(c for t, c in setup_commands().items() if "tests" in t)
    assert "\n" not in command  # one line a user can paste
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci_lines
    assert "HF_HUB_OFFLINE=1" in command and "python -m pytest" in command


def test_main_job_command_uses_real_files_and_commands(capsys):
    command = next(c for t, c in setup_commands().items() if "main job" in t)
    steps = [shlex.split(step) for step in command.split("&&")]
    clis_steps = [step for step in steps if step and step[0] == "clis"]
    assert clis_steps, command
    for step in clis_steps:
        for arg in step[1:]:
            if arg.startswith("examples/"):
                assert (ROOT / arg).exists(), arg
        # The sub-command exists: its --help exits 0.
        sub = [a for a in step[1:] if not a.startswith("-") and "/" not in a][:1]
        try:
            clis.cli.main([*sub, "--help"])
        except SystemExit as exc:
            assert (exc.code or 0) == 0
        assert "Usage" in capsys.readouterr().out


def test_offline_tiny_model_demo_matches_what_clis_testing_prints():
    """The README's "Try it offline" block runs the commands `python -m clis.testing` prints."""
    from clis.testing import _demo_commands

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"### Try it offline with tiny models.*?```bash\n(.*?)\n```", text, flags=re.S).group(1)
    first, *commands = block.splitlines()
    root = shlex.split(first)[-1]
    assert shlex.split(first)[:3] == ["python", "-m", "clis.testing"]
    names = {"hf_clip": "tiny-hf-clip", "grounding_dino": "tiny-grounding-dino", "sam": "tiny-sam"}
    assert commands == _demo_commands({key: f"{root}/{name}" for key, name in names.items()})
    for command in commands:
        for arg in shlex.split(command):
            if arg.startswith("examples/"):
                assert (ROOT / arg).exists(), arg

