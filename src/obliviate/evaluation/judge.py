"""An LLM judge of generated answers: one YES/NO verdict per (question, answer, generation), cached on disk.

Two questions, one prompt template each (``judge_templates/<kind>.txt``, or the user's file):

* ``forget``: does the generation reveal the ground-truth fact? (forget and holdout splits; 1 = it reveals it);
* ``correct``: is the generation correct given the reference answer? (retain, knowledge, task splits; 1 = correct).

A template holds the placeholders ``{question}``, ``{answer}`` (the ground truth) and ``{generation}``, each
replaced by the example's text in one pass (other braces are left alone). The judge's text is parsed by
:func:`parse_verdict`; a text without a verdict scores None and is kept as it is (``Verdict.raw``).

Sources. Yuan et al. ("A closer look at machine unlearning for LLMs", ICLR 2025) report a judge model's
assessment of unlearned models' answers beside ROUGE; their prompts were not consulted here. The shipped
wording is our own. Its layout follows the prompt module of open-unlearning's LLM-judge pull request
(locuslab/open-unlearning #133, work in progress when read): one prompt for data to forget and one for data to
retain, each showing the question, the ground-truth answer and the model's generation and asking only for a
comparison with the ground truth. Where that PR asks for written reasoning and several 0-10 scores as JSON,
these ask for a single YES or NO: a small local judge can give it in one token, and the verdicts average to a
rate (the share of answers that reveal the fact, or that are correct).

Backends: :class:`TransformersBackend` (a model in this process, greedy) and :class:`OpenAIBackend` (POST
``{url}/chat/completions`` of an OpenAI-compatible server: vLLM, TGI, llama.cpp). Each verdict is stored under
``<cache_dir>/judge/<digest of the judge's identity>.json`` and never asked again.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from obliviate.errors import UserError
from obliviate.evaluation.scoring import greedy_answers
from obliviate.evaluation.spread import map_batches
from obliviate.io import exclusive_lock, write_json_atomic
from obliviate.models.loading import load_model, resolve_device, resolve_dtype, resolve_model

KINDS = ("forget", "correct")
PLACEHOLDERS = ("question", "answer", "generation")
TEMPLATE_DIR = Path(__file__).with_name("judge_templates")
SAVE_EVERY = 64  # verdicts asked between two writes of the cache (an interrupted run keeps what it was told)
BACKOFF_S = 0.5  # the openai backend waits 0.5 s, 1 s, 2 s, ... before its further tries

_VERDICT = re.compile(r"\b(yes|no)\b|(?<![\w.])([01])(?!\w|\.\d)", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


@dataclass(frozen=True)
class Verdict:
    """The judge's score (1.0 = yes: reveals the fact / is correct; 0.0 = no; None = no verdict in its text)
    and its text as written."""

    score: float | None
    raw: str


def parse_verdict(text: str) -> float | None:
    """The FIRST verdict token of the judge's text decides: ``yes`` or ``1`` -> 1.0, ``no`` or ``0`` -> 0.0.

    Tokens are whole words, case-insensitive, so "YES", "**No**.", "Score: 1" and "0 (not revealed)" count,
    while "not", "none", "yesterday", "10" and "0.5" do not. A text with no verdict token -> None."""
    found = _VERDICT.search(text)
    if found is None:
        return None
    return 1.0 if (found.group(1) or found.group(2)).lower() in ("yes", "1") else 0.0


@dataclass(frozen=True)
class Template:
    """A judge prompt with the placeholders {question}, {answer} and {generation}."""

    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def render(self, question: str, answer: str, generation: str) -> str:
        """The prompt of one example: each placeholder replaced by its text, in one pass (a question that
        itself contains '{answer}' is not substituted again)."""
        values = {"question": question, "answer": answer, "generation": generation}
        return _PLACEHOLDER.sub(lambda found: values[found.group(1)], self.text)


def load_template(kind: str, path: str = "") -> Template:
    """The user's prompt file ``path`` (``eval.judge.<kind>_template``), or the shipped one when ``path`` is empty;
    a UserError (one line) when the file is missing, unreadable or lacks a placeholder."""
    key = f"eval.judge.{kind}_template"
    file = Path(path) if path else TEMPLATE_DIR / f"{kind}.txt"
    wanted = "a .txt prompt containing {question}, {answer} and {generation}"
    if not file.is_file():
        raise UserError(f"{key} '{file}' is not a file; give {wanted}, or leave {key} empty for the shipped prompt")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{key} '{file}' is not UTF-8 text; save it as UTF-8") from None
    missing = [f"{{{name}}}" for name in PLACEHOLDERS if f"{{{name}}}" not in text]
    if missing:
        raise UserError(f"{key} '{file}' lacks {', '.join(missing)}; give {wanted} (each is replaced by the "
                        "example's text)")
    return Template(text)


class Backend(ABC):
    """Completes judge prompts; ``identity`` names the judge model and whatever else changes its answers."""

    identity: str

    @abstractmethod
    def complete(self, prompts: list[str]) -> list[str]:
        """The judge's text for each prompt, in order."""

    def check(self) -> None:
        """A cheap check run when the experiment is planned, before any long work (none by default)."""


class TransformersBackend(Backend):
    """A judge model in this process (embedded name, model folder or hub id), loaded on first use with the
    project's loaders; greedy, batched, each prompt wrapped in the tokenizer's chat template when it has one."""

    def __init__(self, model: str, cache_dir: Path, max_new_tokens: int, batch_size: int = 8,
                 device: str = "auto") -> None:
        self.source = resolve_model(model)
        self.cache_dir, self.max_new_tokens, self.batch_size = cache_dir, max_new_tokens, batch_size
        self.device = resolve_device(device)
        self.identity = f"transformers:{self.source.identity}:max_new_tokens={max_new_tokens}"
        self._loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def _model(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        if self._loaded is None:
            model, tokenizer = load_model(self.source, self.cache_dir, self.device,
                                          resolve_dtype("auto", self.device))
            self._loaded = model.eval().requires_grad_(False), tokenizer
        return self._loaded

    def complete(self, prompts: list[str]) -> list[str]:
        model, tokenizer = self._model()
        if tokenizer.chat_template:
            prompts = [tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                     add_generation_prompt=True) for prompt in prompts]
        return greedy_answers(model, tokenizer, prompts, self.max_new_tokens, self.batch_size)


def _one_line(error: object) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class OpenAIBackend(Backend):
    """A judge served by an OpenAI-compatible server: POST ``{url}/chat/completions`` with the prompt as the one
    user message, temperature 0 and ``max_tokens``. A request waits ``timeout_s`` for the server; a connection
    error, a timeout, HTTP 429 or 5xx is tried ``retries`` more times, waiting 0.5 s, 1 s, 2 s, ... in between.
    The identity is the served model's name, not the URL (the same model elsewhere gives the same verdicts)."""

    def __init__(self, model: str, url: str, max_new_tokens: int, timeout_s: float = 60.0, retries: int = 3,
                 api_key_env: str = "") -> None:
        self.model, self.url, self.max_new_tokens = model, url.rstrip("/"), max_new_tokens
        self.timeout_s, self.retries = timeout_s, retries
        self.identity = f"openai:{model}:max_new_tokens={max_new_tokens}"
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        if api_key_env and not self.api_key:
            raise UserError(f"eval.judge.api_key_env names {api_key_env}, which is not set; export {api_key_env} "
                            "with the server's API key, or leave eval.judge.api_key_env empty")
        self.requests = 0  # HTTP requests sent, every try counted

    def check(self) -> None:
        """One GET ``{url}/models`` (no further tries): a server that is not there is reported at once."""
        self._send("/models", None, tries=1)

    def complete(self, prompts: list[str]) -> list[str]:
        """Each prompt asked once: several processes divide the prompts and share the answers."""
        return map_batches(prompts, self._chat, "judging")

    def _chat(self, prompt: str) -> str:
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "max_tokens": self.max_new_tokens}
        reply = self._send("/chat/completions", body, tries=1 + self.retries)
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"eval.judge.url {self.url}: the server's answer to /chat/completions has no "
                            "choices[0].message.content; point eval.judge.url at an OpenAI-compatible server") from None

    def _request(self, path: str, body: dict[str, Any] | None) -> urllib.request.Request:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        return urllib.request.Request(self.url + path, data=data, headers=headers,
                                      method="GET" if body is None else "POST")

    def _send(self, path: str, body: dict[str, Any] | None, tries: int) -> Any:
        """The server's JSON answer; a UserError (one line) when it refuses the request or cannot be reached."""
        failure = ""
        for attempt in range(tries):
            if attempt:
                time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            self.requests += 1
            try:
                with urllib.request.urlopen(self._request(path, body), timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                if error.code != 429 and error.code < 500:
                    raise UserError(f"eval.judge.url {self.url}: the server refused {path} with HTTP {error.code} "
                                    f"({_one_line(error.reason)}); check eval.judge.url, eval.judge.model and "
                                    "eval.judge.api_key_env") from None
                failure = f"HTTP {error.code}"
            except json.JSONDecodeError:
                raise UserError(f"eval.judge.url {self.url}: the answer to {path} is not JSON; point "
                                "eval.judge.url at an OpenAI-compatible server (its base URL, e.g. "
                                "http://localhost:8000/v1)") from None
            except urllib.error.URLError as error:
                failure = _one_line(error.reason)
            except TimeoutError:
                failure = f"no answer in {self.timeout_s} s"
            except (ConnectionError, http.client.HTTPException) as error:
                failure = _one_line(error)
        raise UserError(f"eval.judge.url {self.url} cannot be reached ({failure}; {tries} tries); start the "
                        "OpenAI-compatible server there (e.g. vllm serve, python -m llama_cpp.server) or fix "
                        "eval.judge.url")


class Judge:
    """Verdicts of ``backend`` with the two templates, each asked once: stored under
    ``<cache_dir>/judge/`` keyed by (judge identity, the kind's template digest, question, answer, generation)."""

    def __init__(self, backend: Backend, cache_dir: Path, forget_template: Template | None = None,
                 correct_template: Template | None = None) -> None:
        self.backend = backend
        self.templates = {"forget": forget_template or load_template("forget"),
                          "correct": correct_template or load_template("correct")}
        self.identity = "|".join([backend.identity] + [f"{kind}:{self.templates[kind].digest}" for kind in KINDS])
        self.file = cache_dir / "judge" / f"{hashlib.sha256(self.identity.encode()).hexdigest()[:20]}.json"

    def verdicts(self, items: list[tuple[str, str, str]], kind: str) -> list[Verdict]:
        """The verdict of each (question, answer, generation) on the ``kind`` question ("forget" or "correct");
        only those not in the cache are asked (each once), an empty generation included."""
        if kind not in KINDS:
            raise ValueError(f"judge kind {kind!r} is not one of {KINDS}")
        template = self.templates[kind]
        keys = [self._key(template, item) for item in items]
        known = self._read()
        missing = list({key: item for key, item in zip(keys, items) if key not in known}.items())
        for start in range(0, len(missing), SAVE_EVERY):
            chunk = missing[start:start + SAVE_EVERY]
            answers = self.backend.complete([template.render(*item) for _, item in chunk])
            new = {key: {"kind": kind, "question": item[0], "answer": item[1], "generation": item[2], "raw": raw}
                   for (key, item), raw in zip(chunk, answers)}
            known.update(new)
            self._store(new)
        return [Verdict(parse_verdict(known[key]["raw"]), known[key]["raw"]) for key in keys]

    def _key(self, template: Template, item: tuple[str, str, str]) -> str:
        content = json.dumps([self.identity, template.digest, *item], ensure_ascii=False)
        return hashlib.sha256(content.encode()).hexdigest()[:32]

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.file.is_file():
            return {}
        try:
            return json.loads(self.file.read_text(encoding="utf-8"))["verdicts"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"the judge cache {self.file} is damaged; delete it (its verdicts are asked again)"
                            ) from None

    def _store(self, new: dict[str, dict[str, str]]) -> None:
        """Add ``new`` to the cache file, merged under a lock with what other processes wrote meanwhile."""
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.file.with_suffix(".lock")):
            write_json_atomic(self.file, {"identity": self.identity, "verdicts": {**self._read(), **new}})
