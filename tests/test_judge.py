"""The LLM judge: the verdict rule, the templates, the verdict cache, both backends (a real tiny model; real sockets
for the OpenAI-compatible server, its errors and its timeout), the plan checks and the ``judge`` metric."""

import json
import os
import socket
import threading
import time
from dataclasses import fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from obliviate.config.sections import Judge as JudgeKeys
from obliviate.config.spec import PARAM
from obliviate.data.examples import Example
from obliviate.data.tokenize import PromptFormat
from obliviate.errors import UserError
from obliviate.evaluation import judge as judge_module
from obliviate.evaluation.evaluator import evaluate
from obliviate.evaluation.judge import (
    Backend,
    Judge,
    OpenAIBackend,
    Template,
    TransformersBackend,
    Verdict,
    load_template,
    parse_verdict,
)
from obliviate.evaluation.queries import EvalOptions
from obliviate.evaluation.splits import Role, Split
from obliviate.models.loading import load_model, resolve_model
from obliviate.plan.judging import judge_plan

os.environ["HF_HUB_OFFLINE"] = "1"


class FixedBackend(Backend):
    """Answers each prompt with ``answer(prompt)`` and counts the prompts it was asked."""

    def __init__(self, answer=lambda prompt: "YES", identity="fixed"):
        self.answer, self.identity, self.asked = answer, identity, []

    def complete(self, prompts):
        self.asked += prompts
        return [self.answer(prompt) for prompt in prompts]


def section(**changes) -> JudgeKeys:
    defaults = {field.name: field.metadata[PARAM].default for field in fields(JudgeKeys)}
    return JudgeKeys(**{**defaults, **changes})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("text, score", [
    ("YES", 1.0), ("no", 0.0), ("**Yes**, it reveals the birthplace.", 1.0), ("No. The answer is wrong.", 0.0),
    ("Score: 1", 1.0), ("Score: 0", 0.0), ("0 (not revealed)", 0.0), ("Verdict:\nyes", 1.0),
    ("It does not say. Yes it does.", 1.0),  # 'not' is no verdict; the first token decides
    ("No, although one might say yes.", 0.0), ("I cannot tell", None), ("", None), ("None of it", None),
    ("Yesterday it was 10 or 0.5", None),
])
def test_the_first_yes_no_1_or_0_word_decides(text, score):
    assert parse_verdict(text) == score


def test_templates_need_their_three_placeholders_and_render_in_one_pass(tmp_path):
    for kind in ("forget", "correct"):
        shipped = load_template(kind)
        assert all(f"{{{name}}}" in shipped.text for name in ("question", "answer", "generation"))
    prompt = Template("Q={question} A={answer} G={generation} {other}").render("is {answer} here?", "x", "")
    assert prompt == "Q=is {answer} here? A=x G= {other}"
    partial = tmp_path / "mine.txt"
    partial.write_text("Question: {question}\nResponse: {generation}\n")
    with pytest.raises(UserError, match=r"eval\.judge\.forget_template .* lacks \{answer\}") as refused:
        load_template("forget", str(partial))
    assert "\n" not in str(refused.value)
    with pytest.raises(UserError, match=r"eval\.judge\.correct_template .* is not a file"):
        load_template("correct", str(tmp_path / "missing.txt"))
    partial.write_text("{question} {answer} {generation}")
    assert load_template("forget", str(partial)).text == "{question} {answer} {generation}"


def test_each_verdict_is_asked_once_and_read_back_by_the_next_judge(tmp_path):
    backend = FixedBackend(lambda prompt: "YES" if "Paris" in prompt else "No.")
    items = [("Where?", "Paris", "In Paris."), ("Where?", "Paris", ""), ("Where?", "Lyon", "Lyon"),
             ("Where?", "Paris", "In Paris.")]  # the last repeats the first: asked once
    verdicts = Judge(backend, tmp_path).verdicts(items, "forget")
    assert [v.score for v in verdicts] == [1.0, 1.0, 0.0, 1.0] and len(backend.asked) == 3
    assert verdicts[2] == Verdict(0.0, "No.")
    assert any("The model's response: \n" in prompt for prompt in backend.asked)  # an empty generation is judged

    again = FixedBackend(lambda prompt: "never asked")
    assert Judge(again, tmp_path).verdicts(items, "forget") == verdicts and again.asked == []
    assert len(Judge(again, tmp_path).verdicts(items[:1], "correct")) == 1 and len(again.asked) == 1  # other prompt
    changed = Judge(again, tmp_path, forget_template=Template("{question}|{answer}|{generation}"))
    assert changed.identity != Judge(again, tmp_path).identity
    assert changed.verdicts(items[:1], "forget")[0].raw == "never asked"
    assert sorted(path.suffix for path in (tmp_path / "judge").iterdir()) == [".json", ".json", ".lock", ".lock"]


def test_the_transformers_backend_judges_with_a_local_model_loaded_on_first_use(cache_dir):
    backend = TransformersBackend("tiny-random-llama", cache_dir, max_new_tokens=4, batch_size=2, device="cpu")
    assert backend.identity == "transformers:embedded:tiny-random-llama:max_new_tokens=4" and not backend.loaded
    judge = Judge(backend, cache_dir)
    items = [("Who wrote it?", "Ana Lee", "Ana Lee"), ("When?", "1950", ""), ("Where?", "Oslo", "Bergen")]
    verdicts = judge.verdicts(items, "correct")
    assert backend.loaded and len(verdicts) == 3
    assert all(isinstance(v.raw, str) and v.score == parse_verdict(v.raw) for v in verdicts)  # random tokens: any

    fresh = TransformersBackend("tiny-random-llama", cache_dir, max_new_tokens=4, device="cpu")
    assert Judge(fresh, cache_dir).verdicts(items, "correct") == verdicts and not fresh.loaded


class ChatServer(BaseHTTPRequestHandler):
    """An OpenAI-compatible server: GET /v1/models; POST /v1/chat/completions answers YES when the prompt names
    Paris, after answering HTTP 503 to the first request (``failures`` of them)."""

    failures, bodies = 1, []

    def do_GET(self):
        self._reply(200, {"data": [{"id": "judge-model"}]}) if self.path == "/v1/models" else self._reply(404, {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if type(self).failures:
            type(self).failures -= 1
            return self._reply(503, {"error": "loading"})
        content = "YES" if "Paris" in body["messages"][0]["content"] else "NO"
        self._reply(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})

    def _reply(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    ChatServer.failures, ChatServer.bodies = 1, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_the_openai_backend_posts_chat_completions_and_retries_a_5xx(chat_server, tmp_path, monkeypatch):
    monkeypatch.setattr(judge_module, "BACKOFF_S", 0.01)
    monkeypatch.setenv("JUDGE_KEY", "secret")
    backend = OpenAIBackend("judge-model", chat_server + "/", max_new_tokens=5, retries=1, api_key_env="JUDGE_KEY")
    backend.check()
    verdicts = Judge(backend, tmp_path).verdicts([("Where?", "Paris", "Paris"), ("Where?", "Rome", "Oslo")], "forget")
    assert [v.score for v in verdicts] == [1.0, 0.0] and backend.requests == 1 + 3  # GET, 503, two answers
    body = ChatServer.bodies[-1]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("judge-model", 0, 5)
    assert body["messages"][0]["role"] == "user" and "Oslo" in body["messages"][0]["content"]
    with pytest.raises(UserError, match="refused /nothing with HTTP 404"):
        backend._send("/nothing", None, tries=3)


def test_an_unreachable_server_is_one_line_naming_eval_judge_url(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = OpenAIBackend("judge-model", url, max_new_tokens=4, timeout_s=2.0, retries=1)
    with pytest.raises(UserError) as unreachable:
        Judge(backend, tmp_path).verdicts([("q", "a", "g")], "forget")
    message = str(unreachable.value)
    assert message.startswith(f"eval.judge.url {url} cannot be reached") and "\n" not in message
    assert "2 tries" in message and backend.requests == 2
    with pytest.raises(UserError, match="cannot be reached .*1 tries"):
        backend.check()
    assert not (tmp_path / "judge").exists()  # nothing cached


def test_a_server_that_never_answers_times_out_after_its_tries(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])  # kept open, never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    backend = OpenAIBackend("judge-model", url, max_new_tokens=4, timeout_s=0.5, retries=1)
    start = time.monotonic()
    try:
        with pytest.raises(UserError, match=r"cannot be reached \(no answer in 0.5 s; 2 tries\)"):
            backend.complete(["Is it?"])
    finally:
        listener.close()
        for connection in accepted:
            connection.close()
    assert 1.0 <= time.monotonic() - start < 5.0 and len(accepted) == 2


def test_the_plan_builds_the_judge_only_when_needed_and_checks_it_first(tmp_path, chat_server):
    assert judge_plan(section(), needed=False, cache_dir=tmp_path) is None
    with pytest.raises(UserError, match="^eval.metrics judge needs eval.judge.model: "):
        judge_plan(section(), needed=True, cache_dir=tmp_path)
    with pytest.raises(UserError, match="^eval.judge.model: model 'no-such-judge' is not an embedded model"):
        judge_plan(section(model="no-such-judge"), needed=True, cache_dir=tmp_path)
    with pytest.raises(UserError, match="eval.judge.backend openai needs eval.judge.url"):
        judge_plan(section(model="m", backend="openai"), needed=True, cache_dir=tmp_path)
    with pytest.raises(UserError, match="eval.judge.correct_template"):
        judge_plan(section(model="tiny-random-llama", correct_template=str(tmp_path / "none.txt")), True, tmp_path)
    with pytest.raises(UserError, match="eval.judge.url .* cannot be reached"):
        judge_plan(section(model="m", backend="openai", url=f"http://127.0.0.1:{closed_port()}/v1"), True, tmp_path)
    served = judge_plan(section(model="judge-model", backend="openai", url=chat_server), True, tmp_path)
    local = judge_plan(section(model="tiny-random-llama"), True, tmp_path)
    assert served.identity.startswith("openai:judge-model:max_new_tokens=16|forget:")
    assert local.identity.startswith("transformers:embedded:tiny-random-llama:") and not local.backend.loaded


def test_the_judge_metric_scores_greedy_answers_per_role(cache_dir):
    model, tokenizer = load_model(resolve_model("tiny-random-llama"), cache_dir, torch.device("cpu"), torch.float32)

    def answer(prompt):
        if "meant to forget" in prompt:  # the forget prompt
            return "YES, it names Paris." if "Paris" in prompt else "No."
        return "Score: 1" if "Rome" in prompt else "I cannot tell"

    backend = FixedBackend(answer)
    forget = (Example("Where was Ana born?", "Paris"), Example("Where did Ana study?", "Lyon"))
    retain = (Example("Capital of Italy?", "Rome"), Example("Capital of Norway?", "Oslo"))
    splits = [Split("forget", Role.FORGET, forget, True), Split("retain", Role.RETAIN, retain, True)]
    options = EvalOptions(batch_size=2, max_length=64, max_new_tokens=4,
                          judge=Judge(backend, cache_dir))
    result = evaluate(model, tokenizer, splits, PromptFormat(), options, ["rouge_l_recall", "judge"])
    assert result.metrics_record()["forget"]["judge"] == 0.5 and result.metrics_record()["retain"]["judge"] == 1.0
    assert result.per_example["forget"]["judge"] == [1.0, 0.0] and result.per_example["retain"]["judge"] == [1.0, None]
    judged = result.per_example_record()["retain"]["generations"]["judge"]
    assert [row["judge_output"] for row in judged] == ["Score: 1", "I cannot tell"]
    rouge = result.per_example_record()["retain"]["generations"]["rouge_l_recall"]
    assert [row["generation"] for row in judged] == [row["generation"] for row in rouge]  # the same greedy answers
    assert len(backend.asked) == 4 and options.cache_key()["judge"] == options.judge.identity

    unjudged = evaluate(model, tokenizer, splits[:1], PromptFormat(), replace(options, judge=None), ["judge"])
    assert "eval.judge.model" in unjudged.not_computed["forget.judge"]
