"""Shared fixtures.

``impl`` runs a test once per hot-path implementation (ids ``c`` and ``py``).
Where the C module is not built the ``c`` case is skipped, unless
``QUIC_P2P_REQUIRE_C=1`` (set by CI), which turns its absence into a failure.

Tests marked ``netns`` (the NAT lab) are skipped with the reason where root,
``ip netns`` or ``nft`` are missing, unless ``QUIC_P2P_REQUIRE_NETNS=1`` (set by
.ci/run when it runs as root on a kernel that allows network namespaces),
which turns their absence into a failure. Under pytest-xdist they must run
on one worker, one at a time (``-n auto --dist loadgroup``, as README.md says):
another distribution mode fails them, saying so.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest

from quic_p2p import accel

REQUIRE_C = os.environ.get("QUIC_P2P_REQUIRE_C", "") not in ("", "0")
REQUIRE_NETNS = os.environ.get("QUIC_P2P_REQUIRE_NETNS", "") not in ("", "0")


@functools.cache
def _netns_missing() -> str | None:
    """Why the NAT lab cannot run here, or None (probed once per run)."""
    from netlab import missing_capability

    return missing_capability()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is None:
        return
    # A junitxml report names the NAT lab's tests, so .ci/run can count them.
    item.user_properties.append(("netns", "1"))
    why = _netns_missing()
    if why is None:
        # Under pytest-xdist the lab's tests must share one worker, in turn
        # (their xdist_group, tests/test_nat.py), which only --dist loadgroup
        # keeps (a worker sees its mode as config.option.loadgroup).
        in_worker = hasattr(item.config, "workerinput")
        if in_worker and not getattr(item.config.option, "loadgroup", False):
            pytest.fail("the NAT lab's tests run one at a time: with -n, use --dist loadgroup")
        return
    if REQUIRE_NETNS:
        pytest.fail(f"NAT lab required (QUIC_P2P_REQUIRE_NETNS=1) but unavailable: {why}")
    pytest.skip(why)


@functools.cache
def _ipv6_loopback_missing() -> str | None:
    """Why this host has no IPv6 loopback, or None: decided once, by binding a
    UDP socket to ::1 before any test runs, never from a test's own failure
    (a hang there is a failure, not a missing capability)."""
    if not socket.has_ipv6:
        return "Python built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        return f"no IPv6 loopback: {exc}"
    return None


@pytest.fixture
def ipv6_loopback() -> None:
    """Skips the test where ::1 cannot be bound (see _ipv6_loopback_missing)."""
    why = _ipv6_loopback_missing()
    if why is not None:
        pytest.skip(why)


def _get_impl(name: str) -> ModuleType:
    mod = accel.IMPLEMENTATIONS.get(name)
    if mod is None:
        if REQUIRE_C:
            pytest.fail(f"C accelerator required but unavailable: {accel.import_error}")
        pytest.skip(f"C accelerator not built: {accel.import_error}")
    return mod


@pytest.fixture(autouse=True)
def _private_cache_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Endpoints default to the user's cache directory: point it at a fresh
    temporary one, so no test reads or writes a real bootstrap cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(params=["c", "py"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each implementation in turn."""
    return _get_impl(request.param)


@pytest.fixture
def c_impl() -> ModuleType:
    return _get_impl("c")


@pytest.fixture
def py_impl() -> ModuleType:
    return accel.IMPLEMENTATIONS["py"]


@pytest.fixture
async def no_loop_errors(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Fails the test if anything escaped into the event loop (an exception in
    a callback or task) or the endpoint's aioquic safety net fired. Modules
    with endpoints use it: ``pytestmark = pytest.mark.usefixtures(...)``."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    assert not errors, f"exceptions escaped into the event loop: {errors[:3]}"
    failed = [r for r in caplog.records if "aioquic failed" in r.getMessage()]
    assert not failed, f"aioquic raised on a datagram: {failed[0].getMessage()}"
