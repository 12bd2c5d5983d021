"""``quic-p2p doctor``: what stands between this machine and a working node.

Gatherers collect facts (a UDP socket's buffers, the kernel's routes, a real
endpoint asking real contacts what they see); pure functions turn each set
of facts into a :class:`Finding` (a :class:`Check`, a :class:`Verdict`, the
words); :func:`render_text` and :func:`render_json` print a :class:`Report`.
Exit code: 0 when nothing FAILs, 1 when something does, 2 for bad arguments.

The network checks run a real ``QuicP2p`` bound as ``quic-p2p node`` would
be (same options), with a fresh key and a temporary cache directory: it never
takes the lock of a node's identity running beside it, nor writes its cache.
Each contact is asked on its own which address it sees us at (an echo over a
connection from our one socket), which is what tells the NAT's mapping: one
public address for every destination is endpoint-independent, a new one per
destination is endpoint-dependent (symmetric) and defeats hole punching.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import enum
import ipaddress
import json
import shutil
import socket
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import certifi
import service_identity
from cryptography import x509

from . import __version__, accel, selfcheck
from .accel.types import FrameKind
from .aio import QuicP2p
from .aio.socket import SOCKET_BUFFER
from .cli_node import add_config_arguments, config_from_args
from .errors import ConnectionFailedError, QuicP2pError
from .peer import Address, NodeInfo, PeerId, Reachability, format_address, normalize_address
from .proto.certs import (
    CLOCK_SKEW_ALLOWANCE,
    describe_certificate,
    parse_certificate,
)
from .proto.config import Config, Identity, OurType, TrustMode
from .proto.limits import ECHO_TIMEOUT, HANDSHAKE_TIMEOUT, PROBE_TIMEOUT, REVERSE_CONNECT_TIMEOUT
from .proto.state import AnswerResult
from .proto.tls import chain_problem, check_validity
from .proto.wire import WireError, decode_address

__all__ = [
    "Check",
    "EchoAnswer",
    "Finding",
    "MappingBehaviour",
    "Report",
    "Verdict",
    "add_arguments",
    "classify_mapping",
    "diagnose",
    "render_json",
    "render_text",
    "run",
]

#: quic-go's DesiredReceiveBufferSize and DesiredSendBufferSize: 7 MiB since
#: quic-go#4455 (April 2024), 2 MiB before. Below it quic-go logs "failed to
#: sufficiently increase receive buffer size (was: 208 kiB, wanted: 7168 kiB,
#: got: 416 kiB)", comparing what getsockopt reports; its wiki page
#: UDP-Buffer-Sizes advises ``net.core.rmem_max`` / ``wmem_max`` = 7500000.
QUIC_GO_BUFFER = 7 * 1024 * 1024
#: Contacts asked at most (a cache export may hold 200): enough to compare
#: what several destinations see, few enough to stay quick.
MAX_CONTACTS = 8
#: Bounds on each network phase, beyond the engine's own timeouts (which
#: end each request first): an answer that never comes ends the phase.
ECHO_BUDGET = ECHO_TIMEOUT + 2.0
CONNECT_BUDGET = HANDSHAKE_TIMEOUT + REVERSE_CONNECT_TIMEOUT + 2.0
REACH_BUDGET = PROBE_TIMEOUT + ECHO_TIMEOUT + 2.0
#: Route lookups without contacts of a family go toward documentation
#: addresses (RFC 5737 TEST-NET-2, RFC 3849): connect() on a UDP socket only
#: asks the kernel for a route and a source address; nothing is sent.
ROUTE_PROBE = {socket.AF_INET: "198.51.100.1", socket.AF_INET6: "2001:db8::1"}
DISCARD_PORT = 9
#: A certificate expiring sooner than this is worth a warning.
EXPIRY_WARNING = datetime.timedelta(days=30)


class Verdict(enum.Enum):
    """One check's outcome. SKIP: it could not be checked (the detail says why)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class Check(enum.Enum):
    """What a finding is about; the value names it in the report and the JSON."""

    ACCELERATOR = "accelerator"
    RECEIVE_BUFFER = "udp-receive-buffer"
    SEND_BUFFER = "udp-send-buffer"
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    DUAL_STACK = "dual-stack"
    ENDPOINT = "endpoint"
    EXTERNAL_ADDRESS = "external-address"
    NAT = "nat"
    MAPPING = "nat-mapping"
    REACHABILITY = "reachability"
    CLOCK = "clock"
    TRUST = "trust"


class MappingBehaviour(enum.Enum):
    """A NAT's mapping (RFC 4787 §4.1), as far as the echo answers tell."""

    NO_NAT = "no NAT"
    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ENDPOINT_DEPENDENT = "endpoint-dependent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    name: Check
    verdict: Verdict
    detail: str
    #: Facts for machines (``--json``): JSON values only.
    data: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    #: Our id and bound address for this run (None: the endpoint did not start).
    peer_id: PeerId | None = None
    local_addr: Address | None = None
    #: Contacts given (all of them; at most MAX_CONTACTS were asked).
    contacts: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if any(f.verdict is Verdict.FAIL for f in self.findings) else 0

    def get(self, name: Check) -> Finding:
        return next(f for f in self.findings if f.name is name)


# ---------------------------------------------------------------- facts
@dataclass(frozen=True)
class BufferProbe:
    """A UDP socket's buffer after asking for ``asked`` bytes (what the
    endpoint's socket asks for), as getsockopt reports it."""

    option: str  # "receive" | "send"
    asked: int
    reported: int | None
    #: net.core.rmem_max / wmem_max (Linux), if readable.
    limit: int | None
    error: str = ""


@dataclass(frozen=True)
class FamilyProbe:
    """Whether a UDP socket of one family opens, and the route it would take."""

    family: socket.AddressFamily
    socket_error: str = ""
    #: Where a route was looked up (a contact, else a documentation address).
    target: str = ""
    #: Our source address on that route ("" when there is none).
    source: str = ""
    route_error: str = ""


@dataclass(frozen=True)
class EchoAnswer:
    """What one contact said it sees."""

    #: The contact's address we asked at, and the id it proved.
    contact: Address
    peer_id: PeerId | None
    #: Our address as it saw us (None: no answer; ``error`` says why).
    seen: Address | None
    #: Our own address on the path to it: the bound one, or with an
    #: unspecified bind the source address of the kernel's route to it.
    local: Address
    error: str = ""


@dataclass(frozen=True)
class ReachProbe:
    """The node handshakes with the contacts that answered, and the
    reachability check made through the first one that connected."""

    connected: tuple[Address, ...] = ()
    failures: tuple[tuple[Address, str], ...] = ()
    result: Reachability | None = None
    error: str = ""


# ---------------------------------------------------------------- gatherers
def probe_buffers(family: socket.AddressFamily) -> tuple[BufferProbe, BufferProbe]:
    """Asks a fresh UDP socket for ``SOCKET_BUFFER`` each way, as the
    endpoint's socket does (``aio.socket.drain_socket``), and reads back
    what the kernel gave."""
    probes = []
    for option, name, limit in (
        (socket.SO_RCVBUF, "receive", "rmem_max"),
        (socket.SO_SNDBUF, "send", "wmem_max"),
    ):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
                reported = sock.getsockopt(socket.SOL_SOCKET, option)
        except OSError as exc:
            probes.append(BufferProbe(name, SOCKET_BUFFER, None, None, _oserror(exc)))
            continue
        probes.append(BufferProbe(name, SOCKET_BUFFER, reported, _sysctl(f"net/core/{limit}")))
    return probes[0], probes[1]


def _sysctl(name: str) -> int | None:
    try:
        with open(f"/proc/sys/{name}") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def probe_family(family: socket.AddressFamily, targets: Sequence[str]) -> FamilyProbe:
    """Opens a UDP socket of ``family`` and asks the kernel for the route to
    the first target (a documentation address without one)."""
    target = targets[0] if targets else ROUTE_PROBE[family]
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as exc:
        return FamilyProbe(family, socket_error=_oserror(exc), target=target)
    with sock:
        try:
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        except OSError as exc:
            return FamilyProbe(family, socket_error=_oserror(exc), target=target)
        try:
            sock.connect((target, DISCARD_PORT))
        except OSError as exc:
            return FamilyProbe(family, target=target, route_error=_oserror(exc))
        return FamilyProbe(family, target=target, source=str(sock.getsockname()[0]))


def probe_v6only() -> bool | None:
    """Whether an IPv6 UDP socket is IPv6-only unless told otherwise (what
    ``--ip ::`` gets: asyncio leaves IPV6_V6ONLY at the system default);
    None without IPv6 sockets."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            return bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    except OSError:
        return None


def route_source(addr: Address) -> str | None:
    """Our source address toward ``addr`` (a route lookup: nothing is sent)."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((addr[0], addr[1] or DISCARD_PORT))
            return str(normalize_address(sock.getsockname())[0])
    except (OSError, ValueError):
        return None


def _oserror(exc: OSError) -> str:
    return exc.strerror or str(exc)


async def ask_each(node: QuicP2p, contacts: Sequence[NodeInfo]) -> list[EchoAnswer]:
    """Asks every contact, each on a connection of its own from our one
    socket, which address it sees us at (``our_connection_info`` keeps only
    an agreeing quorum; the mapping needs each answer)."""
    return list(await asyncio.gather(*(_ask_one(node, c) for c in contacts)))


async def _ask_one(node: QuicP2p, contact: NodeInfo) -> EchoAnswer:
    loop = asyncio.get_running_loop()
    engine = node.engine
    bound = node.local_addr
    errors: list[str] = []
    # Each address in turn until one can be dialled from our socket's family.
    for addr in contact.addresses:
        local = _local_toward(bound, addr)
        try:
            conn = engine.dial_echo(loop.time(), contact.at(addr))
        except ConnectionFailedError as exc:
            errors.append(str(exc.reason))
            continue
        try:
            async with asyncio.timeout(ECHO_BUDGET):
                command = engine.ask(loop.time(), conn, FrameKind.ECHO_REQUEST, b"", ECHO_TIMEOUT)
                result = await node.result_of(command)
            assert isinstance(result, AnswerResult)
            if result.frame is None:
                return EchoAnswer(addr, contact.peer_id, None, local, _why(node, conn, result))
            seen = normalize_address(decode_address(result.frame.body))
            proved = engine.connection(conn)
            peer_id = proved.peer_id if proved is not None else contact.peer_id
            return EchoAnswer(addr, peer_id, seen, local)
        except TimeoutError:
            return EchoAnswer(addr, contact.peer_id, None, local, "no answer in time")
        except ConnectionFailedError as exc:  # the connection went before we asked
            return EchoAnswer(addr, contact.peer_id, None, local, str(exc.reason))
        except (WireError, ValueError) as exc:
            return EchoAnswer(addr, contact.peer_id, None, local, f"bad echo answer: {exc}")
        finally:
            engine.close_connection(loop.time(), conn, "doctor: echo done")
            node.flush()
    where = contact.peer_addr
    return EchoAnswer(where, contact.peer_id, None, _local_toward(bound, where), "; ".join(errors))


def _why(node: QuicP2p, conn: int, result: AnswerResult) -> str:
    """Why an echo got no answer, in the connection's words where it has
    them (its close reason), else in the doctor's: the timeout and what it
    usually means."""
    info = node.engine.connection(conn)
    if info is not None and info.closed and info.close_reason:
        return info.close_reason
    if info is not None and not info.up:
        return (
            f"no QUIC handshake within {ECHO_TIMEOUT:g} s (nothing answers there, "
            "or packets are dropped on the way)"
        )
    return str(result.error)


def _local_toward(bound: Address, addr: Address) -> Address:
    host = bound[0]
    if host in ("0.0.0.0", "::"):
        host = route_source(addr) or host
    return (host, bound[1])


async def probe_reach(node: QuicP2p, contacts: Sequence[NodeInfo]) -> ReachProbe:
    """Connects (as our role) to ``contacts`` and, as a Node, asks the first
    one connected to dial us from a fresh socket."""

    async def connect(contact: NodeInfo) -> str | None:
        try:
            async with asyncio.timeout(CONNECT_BUDGET):
                await node.connect_to(contact)
        except ConnectionFailedError as exc:
            return str(exc.reason)
        except TimeoutError:
            return "no connection in time"
        return None

    outcomes = await asyncio.gather(*(connect(c) for c in contacts))
    connected = tuple(c.peer_addr for c, why in zip(contacts, outcomes, strict=True) if why is None)
    failures = tuple(
        (c.peer_addr, why) for c, why in zip(contacts, outcomes, strict=True) if why is not None
    )
    probe = ReachProbe(connected, failures)
    if not connected or node.config.our_type is not OurType.NODE:
        return probe
    try:
        async with asyncio.timeout(REACH_BUDGET):
            return replace(probe, result=await node.check_reachability(connected[0]))
    except ConnectionFailedError as exc:
        return replace(probe, error=str(exc.reason))
    except TimeoutError:
        return replace(probe, error="no answer in time")


# ---------------------------------------------------------------- verdicts
def accelerator_finding(checks: Sequence[selfcheck.Check]) -> Finding:
    """``quic-p2p selfcheck`` in one line: the twin is supported, so it is
    a warning only when the C module should have been there."""
    note, *workloads = checks
    active = note.detail.removeprefix("active implementation: ")
    failed = [c for c in workloads if not c.ok]
    data = {"implementation": accel.IMPLEMENTATION, "workloads": len(workloads)}
    if failed:
        why = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        return Finding(Check.ACCELERATOR, Verdict.FAIL, f"{active}; {why}", data)
    if accel.IMPLEMENTATION == "c":
        detail = f"{active}; C and twin agree on {len(workloads)} workloads"
        return Finding(Check.ACCELERATOR, Verdict.OK, detail, data)
    verdict = Verdict.OK if accel.FORCED_PY else Verdict.WARN
    return Finding(Check.ACCELERATOR, verdict, f"{active}; hot paths are slower", data)


def buffer_finding(probe: BufferProbe, *, linux: bool = sys.platform == "linux") -> Finding:
    """The buffer vs quic-go's threshold, compared as quic-go compares it
    (what getsockopt reports). Linux reports twice what it grants (socket(7):
    the doubling is its bookkeeping overhead), so the endpoint's 4 MiB
    request meets 7 MiB exactly when quic-go's own request would; elsewhere
    the endpoint cannot get more than it asks for, so that is the bar."""
    name = Check.RECEIVE_BUFFER if probe.option == "receive" else Check.SEND_BUFFER
    sysctl = "net.core.rmem_max" if probe.option == "receive" else "net.core.wmem_max"
    if probe.reported is None:
        return Finding(name, Verdict.SKIP, f"cannot open a UDP socket: {probe.error}")
    wanted = min(QUIC_GO_BUFFER, probe.asked * (2 if linux else 1))
    data = {"asked": probe.asked, "reported": probe.reported, "wanted": wanted}
    if probe.limit is not None:
        data[sysctl] = probe.limit
    detail = f"asked {_size(probe.asked)}, the kernel reports {_size(probe.reported)}"
    if linux:
        detail += " (Linux reports twice what it grants)"
    if probe.reported >= wanted:
        return Finding(
            name, Verdict.OK, f"{detail}; quic-go wants at least {_size(QUIC_GO_BUFFER)}", data
        )
    limit = f"{sysctl} = {_size(probe.limit)}" if probe.limit is not None else "the system's limit"
    detail += (
        f": {limit} caps it; quic-go warns below {_size(QUIC_GO_BUFFER)} (a burst larger "
        f"than the buffer is dropped); raise it: sysctl -w {sysctl}=7500000"
    )
    return Finding(name, Verdict.WARN, detail, data)


def family_findings(
    v4: FamilyProbe, v6: FamilyProbe, v6only: bool | None, bind_ip: str
) -> list[Finding]:
    """IPv4, IPv6 and dual-stack: a failure only for a family we bind."""
    wildcard = bind_ip == "::"
    uses_v6 = ":" in bind_ip
    uses_v4 = not uses_v6 or (wildcard and v6only is False)
    out = [
        _family_finding(Check.IPV4, "IPv4", v4, uses_v4, bind_ip),
        _family_finding(Check.IPV6, "IPv6", v6, uses_v6, bind_ip),
    ]
    data = {"v6only_default": v6only}
    if v6only is None:
        out.append(Finding(Check.DUAL_STACK, Verdict.SKIP, "no IPv6 sockets here", data))
    elif not v6only:
        detail = "an IPv6 socket on :: also carries IPv4 (IPV6_V6ONLY off by default)"
        if not wildcard:
            detail += ": binding :: would serve both families on one socket"
        out.append(Finding(Check.DUAL_STACK, Verdict.OK, detail, data))
    elif wildcard:
        detail = (
            "--ip :: serves IPv6 only here (IPV6_V6ONLY on by default, "
            "net.ipv6.bindv6only=1): IPv4 peers cannot reach us"
        )
        out.append(Finding(Check.DUAL_STACK, Verdict.WARN, detail, data))
    else:
        detail = "IPv6 sockets are IPv6-only by default (net.ipv6.bindv6only=1)"
        out.append(Finding(Check.DUAL_STACK, Verdict.OK, detail, data))
    return out


def _family_finding(
    name: Check, label: str, probe: FamilyProbe, used: bool, bind_ip: str
) -> Finding:
    data = {"used": used, "source": probe.source or None, "target": probe.target}
    unused = "" if used else f" (not used: bound to {bind_ip})"
    if probe.socket_error:
        verdict = Verdict.FAIL if used else Verdict.OK
        return Finding(name, verdict, f"no {label} UDP socket: {probe.socket_error}{unused}", data)
    if probe.route_error:
        verdict = Verdict.WARN if used else Verdict.OK
        detail = f"sockets work, but no route toward {probe.target}: {probe.route_error}{unused}"
        return Finding(name, verdict, detail, data)
    detail = f"sockets work; route toward {probe.target} from {probe.source}{unused}"
    return Finding(name, Verdict.OK, detail, data)


def endpoint_finding(node: QuicP2p | None, error: str, config: Config, fresh_key: bool) -> Finding:
    where = format_address((config.bind_ip, config.bind_port))
    if node is None:
        return Finding(Check.ENDPOINT, Verdict.FAIL, f"cannot start on {where}: {error}")
    key = "a fresh key for this run" if fresh_key else "the key of --cert"
    detail = (
        f"a {config.our_type.value} bound to {format_address(node.local_addr)} "
        f"(id {node.peer_id.short()}, {key})"
    )
    data = {"local_addr": format_address(node.local_addr), "peer_id": str(node.peer_id)}
    return Finding(Check.ENDPOINT, Verdict.OK, detail, data)


def _answered(answers: Sequence[EchoAnswer]) -> list[tuple[EchoAnswer, Address]]:
    """The answers that came, each with the address it saw."""
    return [(a, a.seen) for a in answers if a.seen is not None]


def _who_sees(answered: Sequence[tuple[EchoAnswer, Address]]) -> str:
    return ", ".join(f"{format_address(a.contact)} sees {format_address(s)}" for a, s in answered)


def address_finding(answers: Sequence[EchoAnswer], given: int) -> Finding:
    """Our address as the contacts see it, and whether they agree."""
    if not answers:
        why = (
            "no CONTACT given: nobody to ask which address they see "
            "(give two or more nodes at different addresses)"
        )
        return Finding(Check.EXTERNAL_ADDRESS, Verdict.SKIP, why)
    data = {
        "answers": {
            format_address(a.contact): format_address(a.seen) if a.seen else None for a in answers
        }
    }
    answered = _answered(answers)
    no_answer = "; ".join(f"{format_address(a.contact)}: {a.error}" for a in answers if not a.seen)
    if not answered:
        detail = f"no contact answered: {no_answer}"
        return Finding(Check.EXTERNAL_ADDRESS, Verdict.FAIL, detail, data)
    if len({s for _, s in answered}) == 1:
        verdict = Verdict.OK
        detail = format_address(answered[0][1])
        if len(answered) > 1:
            detail += f", as {len(answered)} contacts see it"
        else:
            detail += ", as 1 contact sees it (give a second to check that they agree)"
    else:
        verdict = Verdict.WARN
        detail = "contacts disagree: " + _who_sees(answered)
    if no_answer:
        verdict = Verdict.WARN
        detail += f"; no answer from {no_answer}"
    if given > len(answers):
        detail += f" (asked the first {len(answers)} of {given} contacts)"
    return Finding(Check.EXTERNAL_ADDRESS, verdict, detail, data)


def classify_mapping(answers: Sequence[EchoAnswer]) -> tuple[MappingBehaviour, str]:
    """The mapping, from the answers of contacts beyond the NAT (those that
    see us at another address than ours: a contact on our side of the NAT
    sees us directly and says nothing about it); why, in words."""
    answered = _answered(answers)
    if not answered:
        return MappingBehaviour.UNKNOWN, "no contact answered"
    beyond = [(a, s) for a, s in answered if s != a.local]
    if not beyond:
        return MappingBehaviour.NO_NAT, "no NAT in the path: nothing maps our address"
    if len(beyond) < 2:
        return MappingBehaviour.UNKNOWN, (
            "one contact beyond the NAT answered: the mapping shows when two at "
            "different addresses compare what they see"
        )
    if len({s for _, s in beyond}) > 1:
        return MappingBehaviour.ENDPOINT_DEPENDENT, (
            "a new mapping per destination: " + _who_sees(beyond)
        )
    why = f"{len(beyond)} destinations see the same {format_address(beyond[0][1])}"
    if len({a.contact[0] for a, _ in beyond}) == 1:
        why += " (the contacts share one IP address: an address-dependent mapping looks alike)"
    return MappingBehaviour.ENDPOINT_INDEPENDENT, why


def nat_finding(answers: Sequence[EchoAnswer]) -> Finding:
    """Whether a NAT is in the path at all: our address vs theirs of us."""
    answered = _answered(answers)
    if not answered:
        why = "no CONTACT given" if not answers else "no contact answered"
        return Finding(Check.NAT, Verdict.SKIP, f"{why}: cannot compare addresses")
    beyond = [(a, s) for a, s in answered if s != a.local]
    if not beyond:
        ours = format_address(answered[0][0].local)
        detail = f"none: contacts see us at {ours}, as we send"
        return Finding(Check.NAT, Verdict.OK, detail, {"nat": False})
    local = beyond[0][0].local
    public = sorted({s for _, s in beyond})
    if len(public) == 1:
        them = format_address(public[0])
        kept = " (port kept)" if public[0][1] == local[1] else ""
    elif len({host for host, _ in public}) == 1:
        them = f"{public[0][0]} (ports {', '.join(str(p) for _, p in public)})"
        kept = ""
    else:
        them, kept = ", ".join(format_address(p) for p in public), ""
    detail = f"we send from {format_address(local)}, contacts see {them}{kept}"
    if len(beyond) < len(answered):
        near = ", ".join(format_address(a.contact) for a, s in answered if s == a.local)
        detail += f"; {near} on our side of it see us directly"
    return Finding(Check.NAT, Verdict.OK, detail, {"nat": True})


def mapping_finding(answers: Sequence[EchoAnswer]) -> Finding:
    behaviour, why = classify_mapping(answers)
    data = {"mapping": behaviour.value}
    if not answers:
        why = "no CONTACT given: the mapping shows when two contacts compare what they see"
        return Finding(Check.MAPPING, Verdict.SKIP, why, data)
    if behaviour is MappingBehaviour.UNKNOWN:
        return Finding(Check.MAPPING, Verdict.SKIP, f"cannot tell: {why}", data)
    if behaviour is MappingBehaviour.NO_NAT:
        return Finding(Check.MAPPING, Verdict.OK, why, data)
    if behaviour is MappingBehaviour.ENDPOINT_INDEPENDENT:
        detail = f"endpoint-independent mapping: {why}; hole punching can work"
        return Finding(Check.MAPPING, Verdict.OK, detail, data)
    detail = (
        f"endpoint-dependent mapping (a symmetric NAT): {why}; hole punching works "
        "only with peers whose NAT does not filter (docs/nat.md), the others reach us "
        "through a relay"
    )
    return Finding(Check.MAPPING, Verdict.WARN, detail, data)


def reach_finding(answers: Sequence[EchoAnswer], probe: ReachProbe, our_type: OurType) -> Finding:
    name = Check.REACHABILITY
    if not answers:
        why = "no CONTACT given: nobody to dial us from a fresh socket"
        return Finding(name, Verdict.SKIP, why)
    if not any(a.seen is not None for a in answers):
        return Finding(name, Verdict.SKIP, "no contact answered")
    failed = "; ".join(f"{format_address(a)}: {why}" for a, why in probe.failures)
    if not probe.connected:
        return Finding(name, Verdict.FAIL, f"could not connect as a {our_type.value}: {failed}")
    if our_type is not OurType.NODE:
        return Finding(name, Verdict.SKIP, "a Client accepts no connections: nothing to check")
    note = f"; could not connect to {failed}" if failed else ""
    result = probe.result
    if result is None:
        return Finding(name, Verdict.SKIP, f"could not check: {probe.error}{note}")
    data = {"reachable": result.reachable, "address": format_address(result.address)}
    checker, at = format_address(result.checked_by), format_address(result.address)
    if result.reachable:
        detail = (
            f"{checker} dialled {at} from a fresh socket and got through: "
            f"any node can connect to us{note}"
        )
        return Finding(name, Verdict.OK, detail, data)
    detail = (
        f"not reachable: {checker} dialled {at} from a fresh socket and got no answer "
        "(a filtering NAT or a firewall): only nodes we contact first reach us, others "
        f"need hole punching through a rendezvous, or a relay{note}"
    )
    return Finding(name, Verdict.WARN, detail, data)


def clock_finding(
    now: datetime.datetime,
    ours: bytes | None,
    known: Sequence[tuple[str, bytes]],
    *,
    floor: datetime.date | None,
    fresh: bool = True,
) -> Finding:
    """Is our clock plausible, and do the certificates we hold (ours, the
    CAs' and the contacts', labelled) cover it? A wrong clock refuses good
    peers (aioquic and ``check_validity`` compare dates on every connection).
    ``fresh``: ours was made at start (backdated by CLOCK_SKEW_ALLOWANCE)."""
    data = {"utc": now.isoformat(timespec="seconds")}
    when = f"{now:%Y-%m-%d %H:%M} UTC"
    if floor is not None and now.date() < floor:
        detail = (
            f"the clock says {when}, before this installation's CA bundle was published "
            f"(certifi {floor}): certificates will look not yet valid"
        )
        return Finding(Check.CLOCK, Verdict.FAIL, detail, data)
    if ours is not None:
        problem = check_validity(parse_certificate(ours), now)
        if problem is not None:
            return Finding(Check.CLOCK, Verdict.FAIL, f"{when}: our {problem}", data)
    problems = []
    for label, der in known:
        problem = check_validity(parse_certificate(der), now)
        if problem is not None:
            problems.append(f"{label}: {problem}")
    if problems:
        detail = f"{when}: " + "; ".join(problems) + " (out of date, or our clock is wrong)"
        return Finding(Check.CLOCK, Verdict.WARN, detail, data)
    parts = [when]
    if ours is not None:
        end = parse_certificate(ours).not_valid_after_utc
        parts.append(f"our certificate valid until {end:%Y-%m-%d}")
    cas = sum(1 for label, _ in known if label.startswith("--ca"))
    held = [f"{n} {what}" for n, what in ((cas, "CA"), (len(known) - cas, "contact")) if n]
    if held:
        parts.append(f"{' and '.join(held)} certificates valid now")
    if fresh:
        allowance = int(CLOCK_SKEW_ALLOWANCE.total_seconds() // 3600)
        parts.append(f"peers up to {allowance} h behind accept our fresh certificate")
    return Finding(Check.CLOCK, Verdict.OK, "; ".join(parts), data)


def trust_finding(
    config: Config, ours: bytes | None, chain: Sequence[bytes], now: datetime.datetime
) -> Finding:
    """The trust mode and whether our certificate can pass it: peers apply
    the same chain check to us (``check_client_certificate``) and, dialling
    us, the ``--server-name`` check."""
    mode = config.trust_mode
    data: dict[str, Any] = {"trust_mode": mode.value, "cas": len(config.ca_certs_der)}
    pinned = sum(1 for c in config.hard_coded_contacts if c.peer_id is not None)
    generated = config.our_complete_cert is None
    if mode is TrustMode.UNVERIFIED:
        parts = ["unverified: encrypted; peers are their keys (PeerId), no CA"]
    elif config.ca_certs_der:
        n = len(config.ca_certs_der)
        cas = "the --ca certificate" if n == 1 else f"one of the {n} --ca certificates"
        parts = [f"{mode.value}: peers must chain to {cas}"]
    else:
        roots = f"the public roots (certifi {certifi.__version__})"
        parts = [f"{mode.value}: peers must chain to {roots}"]
    if config.tls_server_name:
        parts[0] += f" and carry the name {config.tls_server_name}"
    if config.hard_coded_contacts:
        parts.append(f"{pinned} of {len(config.hard_coded_contacts)} contacts pin an id")
    verdict = Verdict.OK
    if generated or ours is None:
        parts.append("we present a fresh self-signed certificate")
        if mode is not TrustMode.UNVERIFIED:
            parts[-1] += (
                ", which peers of a CA network refuse: give --cert/--key issued by the CA "
                "(quic-p2p certs issue)"
            )
            verdict = Verdict.FAIL
        return Finding(Check.TRUST, verdict, "; ".join(parts), data)
    leaf = parse_certificate(ours)
    described = describe_certificate(ours)
    parts.append(f"we present {described['subject']} issued by {described['issuer']}")
    problems = []
    if mode is not TrustMode.UNVERIFIED:
        # The very check a Node of this network applies to our certificate.
        issuers = [parse_certificate(d) for d in chain]
        problem = chain_problem(leaf, issuers, config.ca_certs_der, now)
        if problem is not None:
            problems.append(f"our {problem}")
        if config.tls_server_name and not _carries_name(leaf, config.tls_server_name):
            problems.append(
                f"our certificate does not carry {config.tls_server_name}: peers dialling "
                "us check it"
            )
    for der in config.ca_certs_der:
        if not describe_certificate(der)["is_ca"]:
            problems.append(f"--ca {describe_certificate(der)['subject']} is not a CA certificate")
    if problems:
        return Finding(Check.TRUST, Verdict.FAIL, "; ".join([*parts, *problems]), data)
    left = leaf.not_valid_after_utc - now
    if datetime.timedelta(0) < left < EXPIRY_WARNING:
        parts.append(f"it expires in {left.days} days: renew it")
        verdict = Verdict.WARN
    return Finding(Check.TRUST, verdict, "; ".join(parts), data)


def _carries_name(cert: x509.Certificate, name: str) -> bool:
    # As aioquic checks a server's name (an IP address is matched as one).
    verify = service_identity.cryptography
    try:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            verify.verify_certificate_hostname(cert, name)
        else:
            verify.verify_certificate_ip_address(cert, name)
    except (service_identity.VerificationError, service_identity.CertificateError):
        return False
    return True


def _certifi_date() -> datetime.date | None:
    """The day certifi's bundle was published (its version is that date)."""
    try:
        y, m, d = (int(p) for p in certifi.__version__.split(".")[:3])
        return datetime.date(y, m, d)
    except ValueError:
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1024 * 1024:
        mib = n / (1024 * 1024)
        return f"{mib:.0f} MiB" if mib.is_integer() else f"{mib:.1f} MiB"
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


# ---------------------------------------------------------------- the run
async def diagnose(config: Config, contacts: Sequence[NodeInfo] | None = None) -> Report:
    """Every check, with an endpoint bound per ``config`` asking ``contacts``
    (default: ``config.hard_coded_contacts``; the first MAX_CONTACTS)."""
    given = list(config.hard_coded_contacts if contacts is None else contacts)
    asked = given[:MAX_CONTACTS]
    findings = [accelerator_finding(selfcheck.run())]
    receive, send = probe_buffers(socket.AF_INET6 if ":" in config.bind_ip else socket.AF_INET)
    findings += [buffer_finding(receive), buffer_finding(send)]
    hosts = [a[0] for c in asked for a in c.addresses]
    findings += family_findings(
        probe_family(socket.AF_INET, [h for h in hosts if ":" not in h]),
        probe_family(socket.AF_INET6, [h for h in hosts if ":" in h]),
        probe_v6only(),
        config.bind_ip,
    )
    now = datetime.datetime.now(datetime.UTC)
    given_cert = config.our_complete_cert
    ours = given_cert.cert_der if given_cert is not None else None
    known = [(f"--ca {describe_certificate(d)['subject']}", d) for d in config.ca_certs_der]
    peer_id: PeerId | None = None
    local: Address | None = None
    with tempfile.TemporaryDirectory(prefix="quic-p2p-doctor-") as tmp:
        node, error = await _start(
            replace(
                config,
                hard_coded_contacts=tuple(given),
                # Not the node's own cache and key: a node running beside
                # us holds their lock, and what we learn here is not worth
                # keeping.
                bootstrap_cache_dir=tmp,
                identity=Identity.ephemeral() if given_cert is None else None,
            )
        )
        if node is None:
            findings.append(endpoint_finding(None, error, config, given_cert is None))
            findings += [
                Finding(c, Verdict.SKIP, "the endpoint did not start")
                for c in (Check.EXTERNAL_ADDRESS, Check.NAT, Check.MAPPING, Check.REACHABILITY)
            ]
        else:
            answers: list[EchoAnswer] = []
            reach = ReachProbe()
            try:
                peer_id, local, ours = node.peer_id, node.local_addr, node.our_certificate
                findings.append(endpoint_finding(node, "", config, given_cert is None))
                reached = asked
                if asked:
                    answers = await ask_each(node, asked)
                    # Each at the address that answered.
                    reached = [c.at(a.contact) for c, a in zip(asked, answers, strict=True)]
                    reach = await probe_reach(
                        node, [c for c, a in zip(reached, answers, strict=True) if a.seen]
                    )
                known += _peer_certificates(node, reached)
            finally:
                await node.aclose()
            findings += [
                address_finding(answers, len(given)),
                nat_finding(answers),
                mapping_finding(answers),
                reach_finding(answers, reach, config.our_type),
            ]
    findings.append(
        clock_finding(now, ours, known, floor=_certifi_date(), fresh=given_cert is None)
    )
    chain = given_cert.chain_der if given_cert is not None else ()
    findings.append(trust_finding(config, ours if given_cert else None, chain, now))
    return Report(tuple(findings), peer_id=peer_id, local_addr=local, contacts=len(given))


async def _start(config: Config) -> tuple[QuicP2p | None, str]:
    """A started endpoint, or why there is none (a port in use, an unusable
    certificate)."""
    try:
        node = QuicP2p(config)
    except QuicP2pError as exc:
        return None, str(exc)
    try:
        await node.start()
    except (OSError, QuicP2pError) as exc:
        await node.aclose()
        return None, _oserror(exc) if isinstance(exc, OSError) else str(exc)
    return node, ""


def _peer_certificates(node: QuicP2p, contacts: Sequence[NodeInfo]) -> list[tuple[str, bytes]]:
    """The contacts' certificates: pinned, or proved when we connected."""
    out = []
    for contact in contacts:
        der = contact.peer_cert_der or node.engine.peer_certificate(contact.peer_addr)
        if der:
            out.append((f"{format_address(contact.peer_addr)}'s certificate", der))
    return out


# ---------------------------------------------------------------- rendering
def render_text(report: Report, width: int | None = None) -> str:
    """One verdict per line; details wrapped under their column."""
    if width is None:
        width = max(60, shutil.get_terminal_size((100, 24)).columns)
    head = f"quic-p2p doctor {__version__}"
    if report.peer_id is not None and report.local_addr is not None:
        head += f": node {report.peer_id.short()} on {format_address(report.local_addr)}"
    head += f", {report.contacts} contact{'s' if report.contacts != 1 else ''}"
    column = max(len(c.value) for c in Check) + 2
    indent = " " * (6 + column)
    lines = [head]
    for f in report.findings:
        lines += textwrap.wrap(
            f.detail,
            width=width,
            initial_indent=f"{f.verdict.name:<6}{f.name.value:<{column}}",
            subsequent_indent=indent,
            break_on_hyphens=False,
        ) or [f"{f.verdict.name:<6}{f.name.value}"]
    counts = {v: sum(1 for f in report.findings if f.verdict is v) for v in Verdict}
    tally = ", ".join(f"{counts[v]} {v.value}" for v in Verdict)
    lines += ["", f"{len(report.findings)} checks: {tally}; exit code {report.exit_code}"]
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(
        {
            "version": __version__,
            "exit_code": report.exit_code,
            "peer_id": str(report.peer_id) if report.peer_id is not None else None,
            "local_addr": format_address(report.local_addr) if report.local_addr else None,
            "contacts": report.contacts,
            "findings": [
                {
                    "name": f.name.value,
                    "verdict": f.verdict.value,
                    "detail": f.detail,
                    "data": dict(f.data),
                }
                for f in report.findings
            ],
        },
        indent=2,
    )


# ---------------------------------------------------------------- the command
def add_arguments(p: argparse.ArgumentParser) -> None:
    """``quic-p2p doctor``'s arguments: CONTACTs, --json, and every option of
    ``quic-p2p node`` (the doctor checks the configuration a node would run)."""
    p.add_argument(
        "contacts",
        nargs="*",
        metavar="CONTACT",
        help="a node to ask which address it sees (HOST:PORT, PEER_ID@HOST:PORT, node JSON, "
        "@FILE); two or more at different addresses tell the NAT's mapping",
    )
    p.add_argument("--json", action="store_true", help="the report as JSON, for machines")
    add_config_arguments(p, default_ip="0.0.0.0")


async def run(args: argparse.Namespace) -> int:
    """The command: 0 when nothing FAILs, 1 when something does, 2 when the
    arguments make no configuration (one line on stderr)."""
    texts = [*args.contacts, *args.contact]
    try:
        config = config_from_args(argparse.Namespace(**{**vars(args), "contact": texts}))
    except QuicP2pError as exc:  # ConfigError, CertificateError, a bad contact
        print(f"quic-p2p doctor: error: {exc}", file=sys.stderr)
        return 2
    report = await diagnose(config)
    print(render_json(report) if args.json else render_text(report), flush=True)
    return report.exit_code
