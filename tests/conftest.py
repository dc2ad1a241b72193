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

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


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
