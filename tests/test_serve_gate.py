"""``opencodec serve``'s opening gate per address: one address may hold at most
``max_opening_per_address`` of the ``max_opening`` connections still opening (default half),
so that one address flooding the gate does not turn every other client away. The gate's
accounting with fake peer addresses, the address key, the limits and the option, and one
real-socket test over loopback addresses (Linux answers on all of 127.0.0.0/8)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from opencodec.serve.limits import ADDRESS_BUSY_RESPONSE, BUSY_RESPONSE, OpeningGate, peer_key
from opencodec.serve.server import ServeLimits

from serve_helpers import read_all, server_thread, until
from stream_models import tiny_stream_model


def test_gate_bounds_each_address_and_the_total():
    """Limit 6, 3 per address: A gets 3 and its 4th is refused for its address; B then fills
    the gate, and C is refused for the total (not counted as an address refusal); one of A's
    leaving lets C in; the per-address counts hold only addresses counted now."""
    gate = OpeningGate(6, 3)
    assert [gate.enter_from("A") for _ in range(4)] == [True, True, True, False]
    assert (gate.count, gate.refused, gate.refused_by_address) == (3, 1, 1)
    assert [gate.enter_from("B") for _ in range(3)] == [True, True, True]
    assert not gate.enter_from("C") and (gate.count, gate.refused, gate.refused_by_address) == (6, 2, 1)
    assert not gate.enter_from("A")  # over its bound and the gate full: the gate's refusal
    assert (gate.refused, gate.refused_by_address) == (3, 1)
    assert gate.by_address == {"A": 3, "B": 3}
    gate.leave_from("A")
    assert gate.enter_from("C") and gate.by_address == {"A": 2, "B": 3, "C": 1}
    for address, times in (("A", 2), ("B", 3), ("C", 1)):
        for _ in range(times):
            gate.leave_from(address)
    assert gate.count == 0 and gate.by_address == {}
    assert gate.refused == 3 and gate.refused_by_address == 1


def test_gate_per_address_exactly_its_bound_and_default_unbounded():
    """Mutants: ``>`` for ``>=`` lets one more in per address; no per-address bound given: only
    the total bounds (``OpeningGate(limit)`` as before)."""
    gate = OpeningGate(10, 2)
    assert [gate.enter_from("x") for _ in range(3)] == [True, True, False]
    assert gate.enter_from("y") and gate.enter_from("y") and not gate.enter_from("y")
    whole = OpeningGate(3)
    assert [whole.enter_from("x") for _ in range(4)] == [True, True, True, False]
    assert whole.refused_by_address == 0 and whole.refused == 1


@pytest.mark.parametrize("peername, key", [
    (("127.0.0.1", 5000), "127.0.0.1"), (("10.1.2.3", 1), "10.1.2.3"),
    (("::ffff:10.1.2.3", 1, 0, 0), "10.1.2.3"),  # a dual-stack socket's IPv4 client
    (("2001:db8:0:7:1::9", 1, 0, 0), "2001:db8:0:7::/64"), (("2001:db8:0:7:ffff::1", 2, 0, 0), "2001:db8:0:7::/64"),
    (("fe80::1%eth0", 1, 0, 2), "fe80::/64%eth0"), (("fe80::1", 1, 0, 4), "fe80::/64%4"),
    (("2001:db8::1", 1, 0, 0), "2001:db8::/64"), (("::1", 1, 0, 0), "::/64"),
    (None, ""), ("", ""), (("not an address", 1), "")])
def test_peer_key(peername, key):
    """An IPv4 address as it is, an IPv6 address's /64 (one host usually holds all of it;
    with its zone, from the host or the scope id, where it has one), anything else one
    shared key."""
    assert peer_key(peername) == key


def test_link_local_peers_on_different_links_are_counted_apart():
    """Every link has its own fe80::/64 (and routers are often fe80::1 on each): Linux gives
    a link-local peer's link as the scope id, the peername's 4th item, not in the host. Two
    peers on two links are two counts, not one (one link flooding would shut the other out);
    two on the same link share their /64's count. Mutant: the scope id dropped."""
    gate = OpeningGate(4, 1)
    on_2, on_3 = peer_key(("fe80::1", 5000, 0, 2)), peer_key(("fe80::1", 5001, 0, 3))
    assert on_2 != on_3
    assert gate.enter_from(on_2) and gate.enter_from(on_3)
    assert not gate.enter_from(peer_key(("fe80::2", 5002, 0, 2)))
    assert gate.by_address == {"fe80::/64%2": 1, "fe80::/64%3": 1} and gate.refused_by_address == 1


def test_per_address_limit_default_and_checks():
    """Half the gate by default (24 of 48; 12 of 24; at least 1); an explicit value up to the
    gate's limit; below 1 is refused."""
    assert ServeLimits().opening_per_address_limit == 24
    assert ServeLimits(max_clients=4).opening_per_address_limit == 12
    assert ServeLimits(max_opening=3).opening_per_address_limit == 1
    assert ServeLimits(max_opening=1).opening_per_address_limit == 1
    assert ServeLimits(max_opening=10, max_opening_per_address=4).opening_per_address_limit == 4
    assert ServeLimits(max_opening=10, max_opening_per_address=40).opening_per_address_limit == 10
    with pytest.raises(ValueError, match="max_opening_per_address must be at least 1, got 0"):
        ServeLimits(max_opening_per_address=0)


def test_max_opening_per_address_option_reaches_the_server(monkeypatch, capsys):
    """``opencodec serve --max-opening-per-address N`` gives the server's limits that value,
    and ``--help`` names the option and its default."""
    import opencodec.model_cache
    import opencodec.serve.server
    from opencodec.cli import main

    seen: list[ServeLimits] = []
    monkeypatch.setattr(opencodec.model_cache, "load_checked_model", lambda *a, **k: type("M", (), {})())
    monkeypatch.setattr(opencodec.serve.server, "run_server", lambda model, host, port, limits, **k: seen.append(limits))
    assert main(["serve", "--port", "0", "--max-opening", "9", "--max-opening-per-address", "5"]) == 0
    assert seen[0].max_opening_per_address == 5 and seen[0].opening_per_address_limit == 5
    assert main(["serve", "--port", "0", "--max-clients", "3"]) == 0
    assert seen[1].max_opening_per_address is None and seen[1].opening_per_address_limit == 11
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-opening-per-address N" in text and "default half of --max-opening" in text


async def _ready_from(port: int, source: str) -> str:
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10, local_addr=(source, 0)) as ws:
        await ws.send(json.dumps({"mode": "relay"}))
        return json.loads(await ws.recv())["type"]


async def _status_from(port: int, source: str) -> int:
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10, local_addr=(source, 0)):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def _idle_from(port: int, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), source_address=(source, 0))


def test_one_address_flooding_the_gate_leaves_room_for_another():
    """max_opening 4, 2 per address: 127.0.0.1 opens 2 idle connections (held) and 50 more,
    each answered 503 "from your address" at once; a real client from 127.0.0.1 is refused
    too, one from 127.0.0.2 is served. 127.0.0.2 and .3 then fill the gate with idle ones
    and a client from 127.0.0.4 gets the gate's own 503. All counts go back to 0."""
    model = tiny_stream_model("tiny_gate", 5)
    limits = ServeLimits(max_clients=2, max_opening=4, max_opening_per_address=2)
    with server_thread(model, limits=limits) as server:
        port, gate = server.port, server.opening
        held = [_idle_from(port, "127.0.0.1") for _ in range(2)]
        extra: list[socket.socket] = []
        try:
            assert until(lambda: gate.count == 2), gate.count
            extra = [_idle_from(port, "127.0.0.1") for _ in range(50)]
            assert until(lambda: gate.refused == 50), gate.refused
            replies = [read_all(s) for s in extra]
            assert set(replies) == {ADDRESS_BUSY_RESPONSE}
            assert b"from your address" in ADDRESS_BUSY_RESPONSE
            assert gate.refused_by_address == 50 and gate.by_address == {"127.0.0.1": 2}
            assert asyncio.run(_status_from(port, "127.0.0.1")) == 503
            assert asyncio.run(_ready_from(port, "127.0.0.2")) == "ready"
            held += [_idle_from(port, source) for source in ("127.0.0.2", "127.0.0.3")]
            assert until(lambda: gate.count == 4), gate.count
            late = _idle_from(port, "127.0.0.4")
            assert read_all(late) == BUSY_RESPONSE  # the gate is full: its own 503
            late.close()
            assert gate.refused_by_address == 51  # the real client from 127.0.0.1
        finally:
            for s in held + extra:
                s.close()
        assert until(lambda: gate.count == 0 and gate.by_address == {} and server.clients == 0), \
            (gate.count, gate.by_address)
