"""Tests of the fleet router (`mcts_po.backends.routing.ServerRouter`): sticky keys, balance, servers down.

    pytest -q tests/test_routing.py      # pure Python, < 1 s
"""

from __future__ import annotations

from collections import Counter

import pytest

from mcts_po.backends.routing import ServerRouter, rendezvous_order


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_stays_on_its_server_and_new_keys_fill_the_emptiest():
    router = ServerRouter(2)
    first = router.route(["a", "a", "b", "c", "d"])
    assert first[0] == first[1]  # one key, one server
    assert Counter(first[i] for i in (0, 2, 3, 4)) == Counter({0: 2, 1: 2})  # four keys, two each
    placed = dict(zip(["a", "b", "c", "d"], [first[0], first[2], first[3], first[4]]))
    for _ in range(20):  # every later call keeps them where they are, whatever else is in it
        servers = router.route(["d", "c", "b", "a", "a"])
        assert servers == [placed["d"], placed["c"], placed["b"], placed["a"], placed["a"]]
    per_key = Counter({"a": 2, "b": 1, "c": 1, "d": 1})
    expected = [21 * sum(n for k, n in per_key.items() if placed[k] == server) for server in (0, 1)]
    assert router.requests_per_server == expected


def test_finished_trees_stop_counting_and_new_ones_go_where_there_is_room():
    router = ServerRouter(2, live_calls=2)
    a, b = router.route(["a", "b"])
    assert a != b
    for _ in range(3):  # "a" finishes; "b" goes on
        router.route(["b"])
    [c] = router.route(["c"])
    assert c == a  # the server that held "a" is empty now


def test_ties_follow_the_rendezvous_order_and_routing_is_the_same_on_every_run():
    keys = [f"gsm8k-test-{i}" for i in range(40)]
    one, two = ServerRouter(3), ServerRouter(3)
    assert one.route(keys) == two.route(keys)
    assert sorted(Counter(ServerRouter(3).route(keys)).values()) == [13, 13, 14]  # balanced to one key
    assert ServerRouter(3).route(["x"]) == [rendezvous_order("x", 3)[0]]  # empty fleet: the key's first choice
    assert sorted(rendezvous_order("x", 5)) == [0, 1, 2, 3, 4]


def test_requests_without_a_key_go_round_robin():
    router = ServerRouter(3)
    assert router.route(["", "", "", "", ""]) == [0, 1, 2, 0, 1]
    assert router.route([""]) == [2]


def test_a_server_down_loses_its_keys_for_good_and_gets_no_new_ones_until_its_cooldown_ends():
    clock = Clock()
    router = ServerRouter(2, down_cooldown_s=30.0, clock=clock)
    [a, b] = router.route(["a", "b"])
    router.mark_down(a)
    assert router.fallback("a", a) == b  # the retry of a's request
    assert router.route(["a", "b", "c"]) == [b, b, b]  # a moved; c avoids the server that is down
    clock.now += 31.0  # the server is back
    assert router.route(["a", "b"]) == [b, b]  # keys stay where their caches are now
    assert router.route(["d"]) == [a]  # new keys fill the empty server
    assert router.moved_keys == 1


def test_a_failure_without_the_server_down_retries_elsewhere_but_keeps_the_key():
    router = ServerRouter(2)
    [a] = router.route(["a"])
    assert router.fallback("a", a) == 1 - a  # 503: the retry goes to the other server
    assert router.route(["a"]) == [a]  # the key did not move
    assert router.fallback("", 1) == 0
    one = ServerRouter(1)
    one.mark_down(0)
    assert one.route(["a", ""]) == [0, 0] and one.fallback("a", 0) == 0  # one server: always that one


def test_all_servers_down_still_routes():
    clock = Clock()
    router = ServerRouter(2, clock=clock)
    router.mark_down(0)
    router.mark_down(1)
    servers = router.route(["a", "b", ""])
    assert all(s in (0, 1) for s in servers)


def test_no_servers_is_an_error():
    with pytest.raises(ValueError, match="at least one server"):
        ServerRouter(0)
