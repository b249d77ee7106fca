"""The LLM judge an experiment uses, built from the ``eval.judge`` section and checked before any long work."""

from __future__ import annotations

from pathlib import Path

from obliviate.config.sections import Judge as JudgeKeys
from obliviate.errors import UserError
from obliviate.evaluation.judge import Backend, Judge, OpenAIBackend, TransformersBackend, load_template


def judge_plan(keys: JudgeKeys, needed: bool, cache_dir: Path, *, needed_by: str = "eval.metrics judge",
               batch_size: int = 8, device: str = "auto") -> Judge | None:
    """The judge when ``needed`` (by ``needed_by``, named in messages), else None. Checked here: a judge model is
    named, the templates are readable and hold their placeholders, the model resolves (transformers) or the
    server answers one GET {url}/models (openai)."""
    if not needed:
        return None
    if not keys.model:
        raise UserError(f"{needed_by} needs eval.judge.model: name the judge (an embedded name such as "
                        "smollm2-135m-instruct, a model folder or a hub id; with --eval.judge.backend openai, the "
                        "model name the server serves)")
    forget, correct = load_template("forget", keys.forget_template), load_template("correct", keys.correct_template)
    backend = _backend(keys, cache_dir, batch_size, device)
    backend.check()
    return Judge(backend, cache_dir, forget, correct)


def _backend(keys: JudgeKeys, cache_dir: Path, batch_size: int, device: str) -> Backend:
    if keys.backend == "transformers":
        try:
            return TransformersBackend(keys.model, cache_dir, keys.max_new_tokens, batch_size, device)
        except UserError as error:  # resolve_model's message speaks of the evaluated model's key
            raise UserError("eval.judge.model: " + str(error).replace("--overall.model_name", "--eval.judge.model")
                            ) from None
    if not keys.url:
        raise UserError("eval.judge.backend openai needs eval.judge.url, the server's base URL (e.g. "
                        "http://localhost:8000/v1)")
    if not keys.url.startswith(("http://", "https://")):
        raise UserError(f"eval.judge.url '{keys.url}' must start with http:// or https:// (e.g. "
                        "http://localhost:8000/v1)")
    return OpenAIBackend(keys.model, keys.url, keys.max_new_tokens, keys.timeout_s, keys.retries, keys.api_key_env)
