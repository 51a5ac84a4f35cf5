"""Which server of a fleet answers a request: sticky per tree, balanced, around servers that are down.

The HTTP backend (`mcts_po.backends.http_backend`) asks a `ServerRouter` for one server per
request of a `generate` call. A request carries a `route_key` (the LLM layer sets the problem
id, so every request of one tree, and all samples of one problem, share a key):

- the first time a key is seen it goes to the server holding the fewest live keys (keys used
  in the last `live_calls` calls), ties broken by rendezvous hashing (highest
  `sha1(key|server)`), so a fleet fills evenly as trees start and finish;
- from then on the key stays on that server (its prefix cache holds the tree's prompts), for
  as long as the server is up;
- a server whose connection failed is marked down for `down_cooldown_s`: retries of its
  requests, and the next calls of its keys, go to the key's next server in rendezvous order
  that is up (the key moves there and stays); new keys avoid it until the cooldown ends;
- requests without a key go round-robin over the servers that are up.

Pure Python, no I/O: the clock is injectable for tests.

    router = ServerRouter(3)
    servers = router.route(["gsm8k-test-0", "gsm8k-test-0", "gsm8k-test-1", ""])
    router.mark_down(servers[0]); router.fallback("gsm8k-test-0", servers[0])
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Callable, Sequence


def rendezvous_order(key: str, num_servers: int) -> list[int]:
    """Server indices by decreasing `sha1(key|index)`: the same order for the same key on every run."""
    def weight(server: int) -> bytes:
        return hashlib.sha1(f"{key}|{server}".encode("utf-8")).digest()

    return sorted(range(num_servers), key=weight, reverse=True)


class ServerRouter:
    def __init__(self, num_servers: int, live_calls: int = 8, down_cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, forget_after_calls: int = 1000):
        if num_servers < 1:
            raise ValueError(f"a router needs at least one server, got {num_servers}")
        self.num_servers = num_servers
        self.live_calls = live_calls
        self.down_cooldown_s = down_cooldown_s
        self.forget_after_calls = forget_after_calls
        self.clock = clock
        self.assigned: dict[str, int] = {}  # key -> server
        self.last_call: dict[str, int] = {}  # key -> the call that last used it
        self.down_until = [0.0] * num_servers
        self.requests_per_server = [0] * num_servers  # over the router's life
        self.moved_keys = 0  # keys moved off a server that was down
        self._call = 0
        self._next_unkeyed = 0
        self._lock = threading.Lock()

    def is_up(self, server: int) -> bool:
        return self.clock() >= self.down_until[server]

    def _up_servers(self) -> list[int]:
        up = [s for s in range(self.num_servers) if self.is_up(s)]
        return up or list(range(self.num_servers))  # all down: try them all anyway

    def route(self, keys: Sequence[str]) -> list[int]:
        """One server index per request key ("" = no key), for one `generate` call."""
        with self._lock:
            self._call += 1
            call = self._call
            up = self._up_servers()
            load = [0] * self.num_servers
            for key in self.last_call:
                if self._live(key, call) and key in self.assigned:
                    load[self.assigned[key]] += 1
            out = []
            for key in keys:
                if not key:
                    server = up[self._next_unkeyed % len(up)]
                    self._next_unkeyed += 1
                else:
                    server = self.assigned.get(key)
                    if server is None or server not in up:
                        if server is not None:
                            self.moved_keys += 1
                            if self._live(key, call):
                                load[server] -= 1
                        order = rendezvous_order(key, self.num_servers)
                        server = min((s for s in order if s in up), key=lambda s: (load[s], order.index(s)))
                        self.assigned[key] = server
                        load[server] += 1
                    elif not self._live(key, call):
                        load[server] += 1  # an old key coming back counts again
                    self.last_call[key] = call
                self.requests_per_server[server] += 1
                out.append(server)
            self._forget(call)
            return out

    def _live(self, key: str, call: int) -> bool:
        """The key was used in the last `live_calls` calls (this one included)."""
        return key in self.last_call and call - self.last_call[key] <= self.live_calls

    def mark_down(self, server: int) -> None:
        """The server refused or dropped a connection: avoid it for `down_cooldown_s`."""
        with self._lock:
            self.down_until[server] = self.clock() + self.down_cooldown_s

    def fallback(self, key: str, failed: int) -> int:
        """Where a request that failed on `failed` goes next: the key's next server in rendezvous
        order that is up (keyed requests move for good), or the next one up (no key)."""
        with self._lock:
            up = [s for s in self._up_servers() if s != failed] or [failed]
            if not key:
                return min(up, key=lambda s: (s - failed) % self.num_servers)
            order = rendezvous_order(key, self.num_servers)
            start = order.index(failed)
            server = next(order[(start + i) % self.num_servers] for i in range(1, self.num_servers + 1)
                          if order[(start + i) % self.num_servers] in up)
            if self.assigned.get(key) == failed and server != failed and not self.is_up(failed):
                self.assigned[key] = server
                self.moved_keys += 1
            return server

    def _forget(self, call: int) -> None:
        if len(self.last_call) <= 4096:
            return
        for key in [k for k, last in self.last_call.items() if call - last > self.forget_after_calls]:
            del self.last_call[key]
            self.assigned.pop(key, None)
