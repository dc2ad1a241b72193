"""Every ``clis`` command against the shared corpus of broken inputs (``corpus.py``).

Each (command, argument, case) is one test: the command gets valid inputs everywhere except
one argument that reads a file, which gets one broken file of that argument's kind. It must
refuse it the way every command promises: exit 2, one line on stderr that names the file, no
traceback, no "unexpected", no model loaded first, and every input byte for byte as it was.

Model options point at tiny models or at ``none``, so a command that wrongly accepts a
broken file still finishes quickly (and fails its test). The FIFO and /dev/zero cases run in a
forked child (``conftest.run_forked``), so a command that blocks on them or reads them forever
is killed and fails too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from . import corpus
from .conftest import changed, snapshot

# A refusal takes well under a second; a run killed at this limit blocked or read forever.
TIMEOUT_S = 20


@dataclass(frozen=True)
class Slot:
    """An argument of a command that reads a file of ``kind``.

    ``argv(baseline, models, path, out)`` is the whole command line with ``path`` in that
    argument, valid inputs elsewhere and outputs under ``out``.
    """

    command: str
    argument: str
    kind: str
    argv: Callable[..., list[str]]
    strict: bool = False  # the command has --strict (refuse a file with any invalid layout)
    skip: frozenset[str] = frozenset()  # cases that are valid input in this argument

    @property
    def id(self) -> str:
        return f"{self.command.replace(' ', '-')}:{self.argument}"


def _score_models(m: dict) -> list[str]:
    return ["--image-model", m["hf_clip"], "--detector", "none"]


def _study(out: Path) -> list[str]:
    return ["-o", out / "study", "--no-plot", "--bootstrap", "50"]


# CLIS-L from the pool alone, with exact label matching: no model to load.
POOL_ONLY = ["--llm", "none", "--text-embedder", "none"]

SLOTS: tuple[Slot, ...] = (
    Slot("validate", "FILE", "layouts", lambda b, m, p, o: ["validate", p]),
    Slot("validate", "--images", "folder", lambda b, m, p, o: ["validate", b.layouts, "--images", p]),
    Slot("score", "IMAGES", "folder", lambda b, m, p, o: [
        "score", p, b.layouts, "--out", o / "scores.jsonl", *_score_models(m), "--no-layout-score", "-q"]),
    Slot("score", "LAYOUTS", "layouts", lambda b, m, p, o: [
        "score", b.images, p, "--out", o / "scores.jsonl", *_score_models(m), "--no-layout-score", "-q"], strict=True),
    Slot("score", "--config", "score_config", lambda b, m, p, o: [
        "score", b.images, b.layouts, "--out", o / "scores.jsonl", *_score_models(m), "--no-layout-score", "-q",
        "--config", p]),
    Slot("score", "--layout-scores", "layout_scores", lambda b, m, p, o: [
        "score", b.images, b.layouts, "--out", o / "scores.jsonl", *_score_models(m), "-q", "--layout-scores", p]),
    Slot("score-layouts", "LAYOUTS", "layouts", lambda b, m, p, o: [
        "score-layouts", p, "--out", o / "layout_scores.jsonl", *POOL_ONLY, "--pool", b.pool, "-q"], strict=True),
    Slot("score-layouts", "--config", "layout_config", lambda b, m, p, o: [
        "score-layouts", b.layouts, "--out", o / "layout_scores.jsonl", *POOL_ONLY, "--pool", b.pool, "-q",
        "--config", p]),
    Slot("score-layouts", "--pool", "pool", lambda b, m, p, o: [
        "score-layouts", b.layouts, "--out", o / "layout_scores.jsonl", *POOL_ONLY, "-q", "--pool", p]),
    Slot("pick", "CANDIDATES", "folder", lambda b, m, p, o: [
        "pick", p, b.layouts, "--scores", b.scores, "--out", o / "dataset", "--min-instance", "0",
        "--min-layout", "0"]),
    Slot("pick", "LAYOUTS", "layouts", lambda b, m, p, o: [
        "pick", b.images, p, "--scores", b.scores, "--out", o / "dataset", "--min-instance", "0", "--min-layout", "0"],
        strict=True),
    Slot("pick", "--scores", "scores", lambda b, m, p, o: [
        "pick", b.images, b.layouts, "--out", o / "dataset", "--min-instance", "0", "--min-layout", "0",
        "--scores", p]),
    Slot("pick", "--config", "score_config", lambda b, m, p, o: [
        "pick", b.images, b.layouts, "--out", o / "dataset", *_score_models(m), "--no-layout-score", "--config", p]),
    Slot("plan", "CONCEPTS", "concepts", lambda b, m, p, o: [
        "plan", p, "--out", o / "layouts.json", "--llm", m["causal_lm"], "--max-new-tokens", "8"]),
    Slot("plan", "--layout-config", "layout_config", lambda b, m, p, o: [
        "plan", b.concepts, "--out", o / "layouts.json", "--llm", m["causal_lm"], "--max-new-tokens", "8",
        "--drafts", "2", "--layout-config", p]),
    Slot("generate", "LAYOUTS", "layouts", lambda b, m, p, o: [
        "generate", p, "--generator", "shapes", "--n", "1", "--width", "64", "--height", "64", "--out", o / "gen"],
        strict=True),
    Slot("pool build", "SOURCES", "layouts", lambda b, m, p, o: ["pool", "build", p, "--out", o / "pool.jsonl"]),
    Slot("pool info", "POOL", "pool", lambda b, m, p, o: ["pool", "info", p]),
    Slot("bench correlate", "SCORES", "scores", lambda b, m, p, o: ["bench", "correlate", p, b.targets, *_study(o)]),
    Slot("bench correlate", "TARGETS", "targets", lambda b, m, p, o: ["bench", "correlate", b.scores, p, *_study(o)]),
    Slot("bench pairwise", "SCORES", "scores", lambda b, m, p, o: [
        "bench", "pairwise", p, b.preferences, *_study(o)]),
    Slot("bench pairwise", "PREFERENCES", "preferences", lambda b, m, p, o: [
        "bench", "pairwise", b.scores, p, *_study(o)]),
    Slot("bench buckets", "SCORES", "scores", lambda b, m, p, o: [
        "bench", "buckets", p, "--layouts", b.layouts, "--edges", "50,60,70", *_study(o)]),
    Slot("bench buckets", "--layouts", "layouts", lambda b, m, p, o: [
        "bench", "buckets", b.scores, "--edges", "50,60,70", *_study(o), "--layouts", p]),
    Slot("bench downstream", "RESULTS", "downstream", lambda b, m, p, o: ["bench", "downstream", p, *_study(o)]),
    Slot("bench corrupt", "IMAGES", "folder", lambda b, m, p, o: [
        "bench", "corrupt", p, b.layouts, *_score_models(m), "--no-layout-score", "--max-images", "1", *_study(o)]),
    Slot("bench corrupt", "LAYOUTS", "layouts", lambda b, m, p, o: [
        "bench", "corrupt", b.images, p, *_score_models(m), "--no-layout-score", "--max-images", "1", *_study(o)]),
    Slot("bench corrupt", "--config", "score_config", lambda b, m, p, o: [
        "bench", "corrupt", b.images, b.layouts, *_score_models(m), "--no-layout-score", "--max-images", "1",
        *_study(o), "--config", p]),
    # A folder is a generator's candidates, to be scored: valid there.
    Slot("bench compare", "GENERATORS", "scores", lambda b, m, p, o: [
        "bench", "compare", f"gen={p}", "--layouts", b.layouts, *_study(o)], skip=frozenset({"folder_not_file"})),
    # Scoring the candidates folder reads the layouts and the config.
    Slot("bench compare", "--layouts", "layouts", lambda b, m, p, o: [
        "bench", "compare", f"gen={b.images}", *_score_models(m), "--no-layout-score", *_study(o), "--layouts", p]),
    Slot("bench compare", "--config", "score_config", lambda b, m, p, o: [
        "bench", "compare", f"gen={b.images}", "--layouts", b.layouts, *_score_models(m), "--no-layout-score",
        *_study(o), "--config", p]),
    Slot("bench layouts", "LAYOUTS", "layouts", lambda b, m, p, o: [
        "bench", "layouts", p, *POOL_ONLY, "--pool", b.pool, *_study(o)]),
    Slot("bench layouts", "--pool", "pool", lambda b, m, p, o: [
        "bench", "layouts", b.layouts, *POOL_ONLY, *_study(o), "--pool", p]),
    Slot("bench layouts", "--config", "layout_config", lambda b, m, p, o: [
        "bench", "layouts", b.layouts, *POOL_ONLY, "--pool", b.pool, *_study(o), "--config", p]),
    Slot("bench agreement", "SCORES", "scores", lambda b, m, p, o: ["bench", "agreement", p, b.labels, *_study(o)]),
    Slot("bench agreement", "LABELS", "labels", lambda b, m, p, o: ["bench", "agreement", b.scores, p, *_study(o)]),
    Slot("bench calibrate", "SCORES", "scores", lambda b, m, p, o: ["bench", "calibrate", p, b.labels, *_study(o)]),
    Slot("bench calibrate", "LABELS", "labels", lambda b, m, p, o: ["bench", "calibrate", b.scores, p, *_study(o)]),
    Slot("annotate build", "CANDIDATES", "folder", lambda b, m, p, o: [
        "annotate", "build", p, b.layouts, "--out", o / "annot"]),
    Slot("annotate build", "LAYOUTS", "layouts", lambda b, m, p, o: [
        "annotate", "build", b.images, p, "--out", o / "annot"]),
    Slot("annotate build", "--scores", "scores", lambda b, m, p, o: [
        "annotate", "build", b.images, b.layouts, "--out", o / "annot", "--scores", p]),
    Slot("annotate merge", "FILES", "labels", lambda b, m, p, o: [
        "annotate", "merge", p, b.labels, "--out", o / "labels.json"]),
    Slot("leaderboard build", "RESULTS", "result", lambda b, m, p, o: [
        "leaderboard", "build", p, "--out", o / "site", "-q"]),
    Slot("leaderboard build", "--config", "leaderboard_config", lambda b, m, p, o: [
        "leaderboard", "build", b.result, "--out", o / "site", "-q", "--config", p]),
    Slot("leaderboard add", "RESULTS", "result", lambda b, m, p, o: [
        "leaderboard", "add", p, "--results-dir", o / "kept"]),
    # A local path is a spec; these are the paths that are no model at all.
    Slot("models fetch", "SPEC", "folder", lambda b, m, p, o: ["models", "fetch", p],
         skip=frozenset({"file_not_folder"})),
)

# Commands that read no file a user names: the sweep has nothing to hand them.
NO_FILE_ARGUMENT = {"models list"}


def _cases(slot: Slot) -> list[str]:
    names = []
    for name in corpus.cases_for(slot.kind):
        if name in slot.skip:
            continue
        case = corpus.case_named(name, slot.kind)
        # One bad record among valid ones: only validate and --strict refuse the whole file.
        if case.one_record and not (slot.strict or slot.command == "validate"):
            continue
        names.append(name)
    return names


SWEEP = [pytest.param(slot, case, id=f"{slot.id}:{case}") for slot in SLOTS for case in _cases(slot)]


def _argv(slot: Slot, baseline: corpus.Baseline, models: dict, path: Path, out: Path, case: str | None) -> list:
    argv = slot.argv(baseline, models, path, out)
    if case is not None and corpus.case_named(case, slot.kind).one_record and slot.strict:
        argv.append("--strict")
    return argv


def assert_refused(run, named: str | None = None) -> None:
    """Exit 2, one line on stderr (naming ``named``), no traceback, no "unexpected"."""
    text = run.out + run.err
    assert "Traceback" not in text, run.describe()
    assert "unexpected" not in text, run.describe()
    assert run.code == 2, run.describe()
    if run.args[0] == "validate" and len(run.lines) > 1:
        # validate prints one line per problem, then "FILE: invalid (N problems)".
        assert re.fullmatch(r".*: invalid \(\d+ problems?\)", run.lines[-1]), run.describe()
        problems = run.lines[:-1]
        assert problems, run.describe()
        assert named is None or all(named in line for line in problems), run.describe()
        return
    assert len(run.lines) == 1, run.describe()
    assert named is None or named in run.lines[0], run.describe()


@pytest.mark.parametrize(("slot", "case"), SWEEP)
def test_broken_input_is_refused_in_one_line(slot, case, baseline, tiny_models, tmp_path, run_clis):
    path = corpus.build_beside(case, slot.kind, tmp_path / "broken")
    out = tmp_path / "out"
    before = snapshot(baseline.root, path)
    argv = _argv(slot, baseline, tiny_models, path, out, case)
    run = run_clis(argv, forked=case in corpus.NON_REGULAR, timeout=TIMEOUT_S)
    assert_refused(run, named=path.name)
    assert not run.models_loaded, f"loaded {run.models_loaded} before refusing the input\n" + run.describe()
    assert not changed(before, snapshot(baseline.root, path)), run.describe()


# --- the baseline is accepted -----------------------------------------------------------------

# The same command lines with the valid file in place of the broken one must run, or the sweep
# above would pass for the wrong reason (a renamed option is exit 2 too).
@pytest.mark.parametrize("slot", [pytest.param(slot, id=slot.id) for slot in SLOTS])
def test_valid_inputs_are_accepted(slot, baseline, tiny_models, tmp_path, run_clis):
    valid = baseline.of_kind(slot.kind) if slot.command != "models fetch" else Path(tiny_models["hf_clip"])
    before = snapshot(baseline.root)
    run = run_clis(_argv(slot, baseline, tiny_models, valid, tmp_path / "out", None))
    assert run.code == 0, run.describe()
    assert not changed(before, snapshot(baseline.root)), run.describe()


# --- every command is swept -------------------------------------------------------------------


def _commands(*group: str) -> list[str]:
    """Command names of ``clis [GROUP] --help``, read from its Commands panel."""
    result = subprocess.run([sys.executable, "-c", "from clis.cli import main; main()", *group, "--help"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    panel = result.stdout.split("Commands", 1)[1]
    return re.findall(r"^│ ([a-z][a-z-]*) ", panel, flags=re.M)


def test_every_command_is_in_the_sweep():
    commands = set()
    for name in _commands():
        sub = _commands(name) if name in {"pool", "models", "bench", "leaderboard", "annotate"} else []
        commands |= {f"{name} {s}" for s in sub} if sub else {name}
    swept = {slot.command for slot in SLOTS} | NO_FILE_ARGUMENT
    assert commands == swept, f"not swept: {sorted(commands - swept)}; gone: {sorted(swept - commands)}"


# --- outputs that are inputs ------------------------------------------------------------------

# An output path that names an input (or another output) is refused before any work, and the
# input is left as it was: the one-line layouts file of a --resume, a --csv that is the --out.
OUTPUT_CLASHES = {
    "score --out LAYOUTS --resume": lambda b, m, f: [
        "score", b.images, f, "--out", f, "--resume", *_score_models(m), "--no-layout-score", "-q"],
    "score --out LAYOUTS --overwrite": lambda b, m, f: [
        "score", b.images, f, "--out", f, "--overwrite", *_score_models(m), "--no-layout-score", "-q"],
    "score --csv --out": lambda b, m, f: [
        "score", b.images, b.layouts, "--out", f, "--csv", f, "--overwrite", *_score_models(m), "--no-layout-score",
        "-q"],
    "score-layouts --out LAYOUTS": lambda b, m, f: ["score-layouts", f, "--out", f, *POOL_ONLY, "--pool", b.pool, "-q"],
    "score-layouts --out LAYOUTS --resume": lambda b, m, f: [
        "score-layouts", f, "--out", f, "--resume", *POOL_ONLY, "--pool", b.pool, "-q"],
    "plan --out CONCEPTS": lambda b, m, f: ["plan", f, "--out", f, "--llm", m["causal_lm"]],
    "generate --out LAYOUTS": lambda b, m, f: ["generate", f, "--generator", "shapes", "--n", "1", "--out", f],
    "pick --out LAYOUTS": lambda b, m, f: ["pick", b.images, f, "--scores", b.scores, "--out", f],
    "pool build --out SOURCES": lambda b, m, f: ["pool", "build", f, "--out", f, "--overwrite"],
    "bench layouts -o LAYOUTS": lambda b, m, f: [
        "bench", "layouts", f, *POOL_ONLY, "--pool", b.pool, "-o", f, "--no-plot", "--bootstrap", "50"],
    "leaderboard build --out RESULTS": lambda b, m, f: ["leaderboard", "build", f, "--out", f, "-q"],
}
CLASH_FILE = {"plan --out CONCEPTS": "concepts", "leaderboard build --out RESULTS": "result"}


@pytest.mark.parametrize("name", OUTPUT_CLASHES)
def test_an_input_named_as_output_is_refused_and_kept(name, baseline, tiny_models, tmp_path, run_clis):
    kind = CLASH_FILE.get(name, "layouts")
    path = tmp_path / f"input{corpus.KINDS[kind].suffix}"
    text = corpus.one_line_layouts() if kind == "layouts" else corpus.KINDS[kind].valid.rstrip("\n")
    path.write_text(text, encoding="utf-8")
    before = snapshot(baseline.root, path)
    run = run_clis(OUTPUT_CLASHES[name](baseline, tiny_models, path))
    assert_refused(run)
    assert not changed(before, snapshot(baseline.root, path)), run.describe()
    assert path.read_text(encoding="utf-8") == text


# --- user text is printed as it is ----------------------------------------------------------

# Commands that read a layouts file and name a bad layout by its id.
MARKUP_COMMANDS = {
    "validate": lambda b, m, f, o: ["validate", f],
    "score": lambda b, m, f, o: ["score", b.images, f, "--out", o / "s.jsonl", *_score_models(m),
                                 "--no-layout-score", "-q", "--strict"],
    "score-layouts": lambda b, m, f, o: ["score-layouts", f, "--out", o / "l.jsonl", *POOL_ONLY, "--pool", b.pool,
                                         "-q", "--strict"],
    "pick": lambda b, m, f, o: ["pick", b.images, f, "--scores", b.scores, "--out", o / "d", "--strict"],
    "generate": lambda b, m, f, o: ["generate", f, "--generator", "shapes", "--n", "1", "--out", o / "g", "--strict"],
    "bench layouts": lambda b, m, f, o: ["bench", "layouts", f, *POOL_ONLY, "--pool", b.pool, *_study(o)],
    "bench buckets": lambda b, m, f, o: ["bench", "buckets", b.scores, "--layouts", f, *_study(o)],
}


@pytest.mark.parametrize("text", corpus.MARKUP_TEXTS)
@pytest.mark.parametrize("command", MARKUP_COMMANDS)
def test_bracketed_layout_id_is_printed_literally(command, text, baseline, tiny_models, tmp_path, run_clis):
    path = tmp_path / "markup.json"
    path.write_text(corpus.invalid_layouts_with_id(text), encoding="utf-8")
    run = run_clis(MARKUP_COMMANDS[command](baseline, tiny_models, path, tmp_path / "out"))
    assert_refused(run)
    assert repr(text) in run.err or text in run.err, run.describe()


# A path the user typed, with brackets in it, in a message about that path.
MARKUP_PATHS = {
    "validate": lambda b, m, f, o: ["validate", f],
    "score": lambda b, m, f, o: ["score", b.images, f, "--out", o / "s.jsonl", *_score_models(m), "-q"],
    "score --config": lambda b, m, f, o: ["score", b.images, b.layouts, "--out", o / "s.jsonl",
                                          *_score_models(m), "--no-layout-score", "-q", "--config", f],
    "pick --scores": lambda b, m, f, o: ["pick", b.images, b.layouts, "--scores", f, "--out", o / "d"],
    "plan": lambda b, m, f, o: ["plan", f, "--out", o / "p.json", "--llm", m["causal_lm"]],
    "bench correlate": lambda b, m, f, o: ["bench", "correlate", f, b.targets, *_study(o)],
    "bench compare": lambda b, m, f, o: ["bench", "compare", f"[/x]={f}", "--layouts", b.layouts, *_study(o)],
    "leaderboard build": lambda b, m, f, o: ["leaderboard", "build", f, "--out", o / "site", "-q"],
}


@pytest.mark.parametrize("text", corpus.MARKUP_TEXTS)
@pytest.mark.parametrize("command", MARKUP_PATHS)
def test_bracketed_path_is_printed_literally(command, text, baseline, tiny_models, tmp_path, run_clis):
    # Folders whose names spell the markup ("[/x]" is the folder "[" holding "x]"); none exists.
    path = Path(f"{tmp_path}/{text}/missing.json")
    run = run_clis(MARKUP_PATHS[command](baseline, tiny_models, path, tmp_path / "out"))
    assert_refused(run)
    assert str(path) in run.err, run.describe()


# Runs that succeed and show the user's text in a table: names, relations, paths.
def _pool_with_relation(text: str, folder: Path) -> Path:
    path = folder / "pool.jsonl"
    path.write_text(corpus.KINDS["pool"].valid.replace('"relation": "on"', f'"relation": {json.dumps(text)}'),
                    encoding="utf-8")
    return path


MARKUP_TABLES = {
    "bench compare NAME": lambda b, m, t, o: ["bench", "compare", f"{t}={b.scores}", "--layouts", b.layouts,
                                              *_study(o)],
    "pool info": lambda b, m, t, o: ["pool", "info", _pool_with_relation(t, o.parent)],
    "score --out": lambda b, m, t, o: ["score", b.images, b.layouts, "--out", f"{o}/{t}/scores.jsonl",
                                       *_score_models(m), "--no-layout-score"],
}


@pytest.mark.parametrize("text", corpus.MARKUP_TEXTS)
@pytest.mark.parametrize("command", MARKUP_TABLES)
def test_bracketed_text_in_tables_is_printed_literally(command, text, baseline, tiny_models, tmp_path, run_clis):
    run = run_clis(MARKUP_TABLES[command](baseline, tiny_models, text, tmp_path / "out"))
    assert run.code == 0, run.describe()
    assert text in run.out + run.err, run.describe()
