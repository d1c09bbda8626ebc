"""Accepting a socket: subprotocol choice, the query token, the client's address behind proxies."""

from __future__ import annotations

import ipaddress
import re
from types import SimpleNamespace
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import NegotiationError

from rtserver.server.sockets import client_ip, query_token, select_subprotocol


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [([], None), (["rt.v1.msgpack"], "rt.v1.msgpack"), (["chat", "rt.v1.json", "rt.v1.msgpack"], "rt.v1.json")],
)
def test_the_first_known_subprotocol_offered_is_chosen(offered: list[str], chosen: str | None) -> None:
    assert select_subprotocol(None, offered) == chosen  # type: ignore[arg-type]


def test_only_unknown_subprotocols_are_refused_with_the_ones_to_use() -> None:
    with pytest.raises(NegotiationError, match=re.escape("rt.v1.json or rt.v1.msgpack")):
        select_subprotocol(None, ["chat.v2"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "token"),
    [("/ws", None), ("/ws?token=abc.def", "abc.def"), ("/ws?x=1&token=t%2B1", "t+1"), ("/ws?token=", None)],
)
def test_query_token(path: str, token: str | None) -> None:
    assert query_token(path) == token


def _ws(peer: str, **headers: str) -> Any:
    return SimpleNamespace(remote_address=(peer, 50000), request=SimpleNamespace(headers=Headers(**headers)))


def _gw(*proxies: str) -> Any:
    return SimpleNamespace(proxies=[ipaddress.ip_network(p) for p in proxies])


def test_the_peer_is_the_client_without_trusted_proxies() -> None:
    assert client_ip(_gw(), _ws("198.51.100.9", **{"X-Forwarded-For": "203.0.113.7"})) == "198.51.100.9"


def test_a_trusted_proxy_names_the_client_by_its_last_hop() -> None:
    gw = _gw("127.0.0.0/8")
    assert client_ip(gw, _ws("127.0.0.1", **{"X-Forwarded-For": "10.0.0.1, 203.0.113.7"})) == "203.0.113.7"
    assert client_ip(gw, _ws("127.0.0.1", **{"X-Real-IP": "203.0.113.8"})) == "203.0.113.8"
    assert client_ip(gw, _ws("127.0.0.1")) == "127.0.0.1", "a proxy that names nobody: the proxy itself"


def test_an_untrusted_peer_cannot_claim_another_address() -> None:
    assert client_ip(_gw("127.0.0.0/8"), _ws("198.51.100.9", **{"X-Real-IP": "203.0.113.8"})) == "198.51.100.9"
