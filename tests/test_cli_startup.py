"""`clis --help` must not import the model and plotting stacks.

Loading torch, transformers, scipy and matplotlib takes seconds, so the command line only
imports them inside the commands that run models or draw figures. These tests walk every
command (built-in and entry-point plugins), ask each for --help in a fresh interpreter and
check which of those libraries ended up in ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "transformers", "scipy", "matplotlib", "seaborn", "pandas", "diffusers", "open_clip")

# Runs in a fresh interpreter: every command path's --help, then report what was imported.
WALK_HELP = """
import contextlib, io, json, sys
import typer
import clis.cli

def paths(command, prefix=()):
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from paths(sub, (*prefix, name))

walked = []
for path in [("--version",), *((*p, "--help") for p in paths(typer.main.get_command(clis.cli.app)))]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            clis.cli.main(list(path))
        except SystemExit as exc:
            code = exc.code
    walked.append([" ".join(path), code])
print(json.dumps({"walked": walked, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def run_python(code: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_help_of_every_command_imports_no_heavy_library():
    report = run_python(WALK_HELP)
    walked = dict(report["walked"])
    # The plugins are registered (so their modules were imported), and every help exits 0.
    for command in ("validate --help", "score --help", "pick --help", "plan --help", "models fetch --help",
                    "generate --help", "bench corrupt --help", "leaderboard build --help"):
        assert command in walked
    assert all(code in (0, None) for code in walked.values()), walked
    assert report["heavy"] == []


def test_models_list_imports_no_heavy_library():
    """`clis models list` only looks at files: no torch, transformers or open_clip to print the table."""
    report = run_python(
        "import contextlib, io, json, sys\n"
        "import clis.cli\n"
        "out = io.StringIO()\n"
        "for argv in (['models', 'list'], ['models', 'list', '--json']):\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            clis.cli.main(argv)\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code in (0, None), exc.code\n"
        "print(json.dumps({'heavy': [m for m in HEAVY if m in sys.modules], 'listed': 'embedded:minilm' in out.getvalue()}))"
    )
    assert report == {"heavy": [], "listed": True}


def test_plugin_and_command_modules_import_without_torch():
    """Importing every clis.cli module and every clis.commands entry point pulls in no heavy library."""
    report = run_python(
        "import importlib, importlib.metadata, json, pkgutil, sys\n"
        "import clis.cli\n"
        "names = [m.name for m in pkgutil.iter_modules(clis.cli.__path__)]\n"
        "for name in names:\n"
        "    importlib.import_module(f'clis.cli.{name}')\n"
        "plugins = [ep.value for ep in importlib.metadata.entry_points(group='clis.commands')]\n"
        "for ep in importlib.metadata.entry_points(group='clis.commands'):\n"
        "    ep.load()\n"
        "print(json.dumps({'heavy': [m for m in HEAVY if m in sys.modules], 'plugins': sorted(plugins), 'n': len(names)}))"
    )
    assert report["heavy"] == []
    assert {"benchmarks.cli:app", "leaderboard.cli:app"} <= set(report["plugins"]) and report["n"] >= 5


def test_default_model_specs_import_without_torch():
    report = run_python(
        "import sys, json\n"
        "from clis.models import DEFAULT_CLIP, DEFAULT_DETECTOR, DEFAULT_LLM, DEFAULT_SAM, DEFAULT_TEXT_EMBEDDER\n"
        "print(json.dumps({'heavy': [m for m in HEAVY if m in sys.modules]}))"
    )
    assert report["heavy"] == []


def test_lazy_public_names_of_clis_models_still_import():
    from clis import models
    from clis.models import registry

    assert models.DEFAULT_SAM == registry.DEFAULT_SAM
    assert models.load_model is registry.load_model
    assert set(models.__all__) <= set(dir(models))
    for name in models.__all__:
        assert getattr(models, name) is not None
