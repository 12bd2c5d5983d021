"""Hole punching and reachability: acting as a rendezvous (telling two Nodes
where the other is and when to dial), acting on a rendezvous's notice,
throwaway probe connections, and reachability checks we run for others."""

from __future__ import annotations

from ..accel.types import Frame
from ..errors import ConnectionFailedError, NoRendezvousError
from ..peer import Address, NodeInfo, PeerKind
from ..reasons import Cause, Reason
from .config import OurType
from .limits import (
    PROBE_TIMEOUT,
    PUNCH_HANDSHAKE_TIMEOUT,
    PUNCH_MAX_PENDING,
    PUNCH_START_DELAY_MS,
    REACH_MAX_PENDING,
)
from .peers import Peers
from .scope import could_observe
from .state import Conn, ProbeResult, ReachCheckWanted, Record
from .wire import (
    ErrorCode,
    RejectReason,
    WireError,
    decode_address,
    decode_punch_info,
    encode_punch_info,
    encode_reach_result,
)


class Rendezvous(Peers):
    def _rendezvous_conn(self, via_addr: Address, target: Address) -> Conn:
        """The connection to a rendezvous we may ask about ``target``."""
        rendezvous = self._records.at(via_addr)
        conn = None if rendezvous is None else self._send_conn(rendezvous)
        if rendezvous is None or not rendezvous.connected or conn is None:
            raise NoRendezvousError(
                target, Reason(Cause.RENDEZVOUS, "not connected to the rendezvous")
            )
        if rendezvous.relay is not None:
            raise NoRendezvousError(
                target, Reason(Cause.RENDEZVOUS, "the rendezvous is itself reached through a relay")
            )
        return conn

    def _rendezvous_parties(
        self, conn: Conn, f: Frame, what: str
    ) -> tuple[Record, Record, Conn] | None:
        """As a rendezvous: the asker and the connected Node it names, or None
        (refused, or the asker's connection closed for a violation)."""
        asker = conn.record
        if asker is None or not asker.connected:
            self._violation(conn, ErrorCode.PROTOCOL_VIOLATION, f"{what} before handshake")
            return None
        try:
            target = self._records.at(decode_address(f.body))
        except WireError as exc:
            self._violation(conn, ErrorCode.BAD_FRAME, str(exc))
            return None
        if not asker.rendezvous_requests.take(self._now()):
            # Before anything goes to the Node it names: a flood of requests
            # must not become a flood of notices to a third party.
            self._refuse(conn, f.msg_id, RejectReason.RATE_LIMITED)
            self._bump(f"{what}s refused: rate")
            return None
        to_target = None if target is None else self._send_conn(target)
        if (
            target is None
            or to_target is None
            or target is asker
            or not self._helper(target)
            or not self._helper(asker)
        ):
            self._refuse(conn, f.msg_id, RejectReason.UNKNOWN_PEER)
            return None
        return asker, target, to_target

    def _helper(self, record: Record | None) -> bool:
        """Whether we punch or relay with this peer (as rendezvous, or with it
        as ours): both Nodes, connected directly — addresses behind a relay
        mean nothing on the Internet, and relays are never nested."""
        return (
            record is not None
            and record.connected
            and record.kind is PeerKind.NODE
            and record.relay is None
            and self.config.our_type is OurType.NODE
        )

    def _our_rendezvous(self, record: Record | None) -> bool:
        """Whether a Node may start punches and relay sessions at our side:
        one we connected to ourselves (a contact, a bootstrap node, a peer
        we dialled), connected directly. A Node that merely connected to us
        cannot make us dial anyone or take relayed peers from it."""
        return record is not None and record.we_contacted and self._helper(record)

    # ------------------------------------------------------------ punching
    def _on_punch_request(self, conn: Conn, f: Frame) -> None:
        """As the rendezvous: tell both sides where the other is, as we see
        them, and when to start: our info reaches each side after half its
        round-trip time, so the nearer side waits the difference and both
        dial at the same moment (plus a margin)."""
        parties = self._rendezvous_parties(conn, f, "punch request")
        if parties is None:
            return
        asker, target, to_target = parties
        rtt_a = conn.link.rtt or 0.0
        rtt_b = to_target.link.rtt or 0.0
        far = max(rtt_a, rtt_b)
        delay_a = PUNCH_START_DELAY_MS + round((far - rtt_a) * 500)
        delay_b = PUNCH_START_DELAY_MS + round((far - rtt_b) * 500)
        conn.link.send_frame(encode_punch_info(f.msg_id, delay_a, target.addr, target.cert))
        to_target.link.send_frame(encode_punch_info(0, delay_b, asker.addr, asker.cert))
        self._dirty.update((conn, to_target))
        self._bump("punches relayed")

    def _on_punch_info(self, conn: Conn, f: Frame) -> None:
        try:
            delay_ms, node = decode_punch_info(f.body)
        except WireError as exc:
            self._violation(conn, ErrorCode.BAD_FRAME, str(exc))
            return
        addr = node.peer_addr
        # A rendezvous we chose asks us to dial the other side too.
        existing = self._records.find(node)
        relayed = existing is not None and existing.connected and existing.relay is not None
        rendezvous = conn.record
        if rendezvous is None or not self._our_rendezvous(rendezvous):
            self._bump("punches declined: not a rendezvous we chose")
            return
        if self._is_us(node):
            self._bump("punches declined: names us")
            return
        if not could_observe(rendezvous.addr, addr):
            self._bump("punches declined: an address the rendezvous could not have seen")
            return
        if self._punches_pending >= PUNCH_MAX_PENDING or (existing is not None and not relayed):
            self._bump("punches declined")
            return
        now = self._now()
        if not rendezvous.punch_notices.take(now) or not self._punch_dials.take(now):
            self._bump("punches declined: rate")
            return
        self._punches_pending += 1
        if existing is not None:
            # Relayed to that peer: probe the direct path instead.
            node = NodeInfo(addr, peer_id=existing.peer_id or node.peer_id)
            self._call_later(delay_ms / 1000, self._probe_path, existing, node, True)
            return
        self._call_later(delay_ms / 1000, self._punch, node, rendezvous)

    def _punch(self, node: NodeInfo, rendezvous: Record) -> None:
        self._punches_pending -= 1
        if not self._closing and self._records.find(node) is None:
            record = self._connect(node, we_contacted=False, timeout=PUNCH_HANDSHAKE_TIMEOUT)
            if record.out is not None and not record.out.punch:
                record.out.punch = True
                self._punch_conns += 1
                record.punched_by = rendezvous

    # ------------------------------------------------------------ probes
    def _probe(
        self, node: NodeInfo, socket: int = 0, record: Record | None = None, punch: bool = False
    ) -> int:
        """A throwaway echo-only connection to ``node`` (its certificate
        pinned), from our socket or another the driver opened; its
        ``ProbeResult`` says whether TLS completed within PROBE_TIMEOUT.
        ``record``: the relayed peer whose direct path this tests; ``punch``:
        it counts as one of the punches we joined until it ends."""
        probe = self._next_id()
        try:
            conn = self._dial(node, echo_only=True, timeout=PROBE_TIMEOUT)
        except ConnectionFailedError:
            if record is not None:
                self._bump("path probes failed")
            if punch:
                self._punches_pending -= 1
            self._emit(ProbeResult(probe, False))
            return probe
        conn.probe = probe
        conn.probe_for = record
        conn.socket = socket
        if punch:
            self._punch_probes.add(probe)
        return probe

    def _probe_path(self, record: Record, node: NodeInfo, punch: bool = False) -> int:
        """Probes a relayed peer's direct path; one that works is taken."""
        if record.dead or record.relay is None:
            if punch:
                self._punches_pending -= 1
            probe = self._next_id()
            self._emit(ProbeResult(probe, record.relay is None and not record.dead))
            return probe
        return self._probe(node, record=record, punch=punch)

    # ------------------------------------------------------------ reachability
    def _on_reach_request(self, conn: Conn, f: Frame) -> None:
        """Dial the asker back from a fresh socket (the driver opens it) and
        say whether it worked."""
        asker = conn.record
        if asker is None or not asker.connected:
            self._violation(conn, ErrorCode.PROTOCOL_VIOLATION, "check request before handshake")
            return
        if not self._helper(asker) or self._reach_pending >= REACH_MAX_PENDING:
            self._refuse(conn, f.msg_id, RejectReason.CHECK_REFUSED)
            return
        self._reach_pending += 1
        check = self._next_id()
        self._reach_checks[check] = (conn, f.msg_id)
        self._emit(ReachCheckWanted(check, asker.node_info()))

    def _reach_checked(self, check: int, target: Address, reached: bool) -> None:
        entry = self._reach_checks.pop(check, None)
        if entry is None:
            return
        self._reach_pending -= 1
        conn, msg_id = entry
        if conn.link.down is None:
            conn.link.send_frame(encode_reach_result(msg_id, reached, target))
            self._dirty.add(conn)
        self._bump(f"reachability checks: {'reached' if reached else 'not reached'}")
