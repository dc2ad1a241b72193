"""Shared test setup: offline, one thread, tiny models built once per session.

The environment variables are set at import time, before any test module imports
transformers or huggingface_hub, because both read them when first imported.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# Nothing in the suite reads or writes the user's ~/.cache/clis (converted models, the hash
# cache, the CLIS-L cache): the whole session, subprocesses included, uses a throw-away folder.
_SESSION_CACHE = tempfile.mkdtemp(prefix="clis-test-cache-")
os.environ["CLIS_CACHE_DIR"] = _SESSION_CACHE
os.environ.pop("CLIS_LAYOUT_CACHE", None)
atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _own_layout_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own CLIS-L cache file (``CLIS_LAYOUT_CACHE``), outside ``tmp_path``.

    The tiny models are seeded, so two tests that build the same tiny LM share a CLIS-L
    manifest id: with one cache for the session, a test that counts LLM forward passes would
    see another test's results. Within a test the cache works as it does for users.
    """
    monkeypatch.setenv("CLIS_LAYOUT_CACHE", str(tmp_path_factory.mktemp("layout-cache") / "layout_scores.sqlite"))


@pytest.fixture(autouse=True)
def _own_judge_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own VLM-judge answer cache (``CLIS_JUDGE_CACHE``), for the reason above:
    a test that counts the requests a server receives must not be answered from another test's run."""
    monkeypatch.setenv("CLIS_JUDGE_CACHE", str(tmp_path_factory.mktemp("judge-cache") / "judge_answers.sqlite"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, clis_cache_dir) -> dict[str, str]:
    """``{name: spec}`` of tiny random models (see ``clis.testing.build_tiny_models``), built once.

    Uses ``clis_cache_dir`` so fingerprinting the temporary weights never writes to the
    user's hash cache.
    """
    from clis.testing import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def clis_cache_dir(tmp_path_factory):
    """Point ``CLIS_CACHE_DIR`` at a fresh temp folder for the rest of the session.

    For tests that must not read or write the user's ``~/.cache/clis`` (hash cache,
    converted embedded models).
    """
    folder = tmp_path_factory.mktemp("clis-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIS_CACHE_DIR", str(folder))
        yield folder
