"""Which addresses a rendezvous could have seen a peer at (quic_p2p.proto.scope)."""

from __future__ import annotations

import pytest

from quic_p2p.proto.scope import Scope, could_observe, scope


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        (("127.0.0.1", 1), Scope.LOOPBACK),
        (("127.9.9.9", 1), Scope.LOOPBACK),
        (("::1", 1), Scope.LOOPBACK),
        (("::ffff:127.0.0.1", 1), Scope.LOOPBACK),
        (("169.254.3.4", 1), Scope.LINK_LOCAL),
        (("fe80::1", 1), Scope.LINK_LOCAL),
        (("10.1.2.3", 1), Scope.PRIVATE),
        (("192.168.0.1", 1), Scope.PRIVATE),
        (("100.64.0.1", 1), Scope.PRIVATE),  # carrier-grade NAT
        (("fd00::1", 1), Scope.PRIVATE),
        (("203.0.113.10", 1), Scope.PRIVATE),  # documentation range (the NAT lab's "internet")
        (("8.8.8.8", 53), Scope.GLOBAL),
        (("2001:4860:4860::8888", 53), Scope.GLOBAL),
        (("::ffff:8.8.8.8", 53), Scope.GLOBAL),
        (("0.0.0.0", 1), Scope.UNUSABLE),
        (("::", 1), Scope.UNUSABLE),
        (("224.0.0.1", 1), Scope.UNUSABLE),
        (("ff02::1", 1), Scope.UNUSABLE),
        (("255.255.255.255", 1), Scope.UNUSABLE),
        (("240.0.0.1", 1), Scope.UNUSABLE),
        (("8.8.8.8", 0), Scope.UNUSABLE),
        (("not an ip", 1), Scope.UNUSABLE),
    ],
)
def test_scope_of_an_address(addr: tuple[str, int], expected: Scope) -> None:
    assert scope(addr) is expected


@pytest.mark.parametrize(
    ("seen_at", "named", "ok"),
    [
        (("127.0.0.1", 1), ("127.0.0.2", 2), True),
        (("127.0.0.1", 1), ("10.0.0.1", 2), False),  # loopback rendezvous, LAN target
        (("127.0.0.1", 1), ("8.8.8.8", 2), False),
        (("8.8.8.8", 1), ("1.1.1.1", 2), True),
        (("8.8.8.8", 1), ("192.168.1.1", 2), False),  # a public rendezvous naming our LAN
        (("8.8.8.8", 1), ("127.0.0.1", 2), False),
        (("8.8.8.8", 1), ("169.254.1.1", 2), False),
        (("10.0.0.1", 1), ("10.0.0.7", 2), True),
        (("10.0.0.1", 1), ("8.8.8.8", 2), True),  # a LAN rendezvous sees public peers too
        (("10.0.0.1", 1), ("127.0.0.1", 2), False),
        (("fe80::1", 1), ("fe80::2", 2), True),
        (("fe80::1", 1), ("10.0.0.1", 2), False),
        (("8.8.8.8", 1), ("0.0.0.0", 2), False),
        (("8.8.8.8", 1), ("224.0.0.1", 2), False),
        (("0.0.0.0", 1), ("8.8.8.8", 2), False),
    ],
)
def test_could_observe(seen_at: tuple[str, int], named: tuple[str, int], ok: bool) -> None:
    assert could_observe(seen_at, named) is ok
