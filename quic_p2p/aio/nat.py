"""The strategies that wait: hole punching with retries and back-off, the
relay fallback, and the background upgrade of a relayed peer to direct."""

from __future__ import annotations

import asyncio
import contextlib

from ..accel.types import Frame, FrameKind
from ..errors import ConnectionFailedError, NoRendezvousError
from ..peer import Address, NodeInfo, Peer
from ..proto.limits import (
    PUNCH_ATTEMPTS,
    PUNCH_BACKOFF,
    PUNCH_HANDSHAKE_TIMEOUT,
    RATE_LIMITED_PAUSE,
    RATE_LIMITED_RETRIES,
    RELAY_UPGRADE_DELAYS,
)
from ..proto.state import ProbeResult
from ..proto.wire import WireError, decode_punch_info, encode_address
from ..reasons import Cause, Reason
from .driver import Driver


class Nat(Driver):
    async def _connect_via(
        self, node: NodeInfo, via_addr: Address, *, punch: bool, relay: bool
    ) -> Peer:
        """Punches (up to PUNCH_ATTEMPTS) and falls back to the relay after
        the first failed punch; ``NoRendezvousError`` ends it at once."""
        reasons: list[str] = []
        punches_left = PUNCH_ATTEMPTS if punch else 0
        relay_tried = not relay
        attempt = 0
        while True:
            if punches_left:
                punches_left -= 1
                attempt += 1
                try:
                    return await self._punch_once(node, via_addr)
                except NoRendezvousError:
                    raise
                except ConnectionFailedError as exc:
                    reasons.append(f"punch {attempt}: {exc.reason}")
            if not relay_tried:
                relay_tried = True
                try:
                    peer = await self._connect_relayed(node, via_addr)
                except NoRendezvousError:
                    raise
                except ConnectionFailedError as exc:
                    reasons.append(f"relay: {exc.reason}")
                else:
                    if punch and self.engine.relayed_via(peer.peer_addr) is not None:
                        self._spawn(self._upgrade_loop(peer.peer_addr, via_addr))
                    return peer
            if not punches_left:
                break
            await asyncio.sleep(PUNCH_BACKOFF * 2 ** (attempt - 1))
        if punch:
            summary = (
                f"hole punching failed after {attempt} attempts (a NAT that maps each "
                "destination to a new port, i.e. symmetric, cannot be punched)"
            )
            if relay:
                summary += " and the rendezvous did not relay"
        else:
            summary = "the rendezvous did not relay"
        cause = Cause.PUNCH_FAILED if punch else Cause.RELAY
        raise ConnectionFailedError(
            node.peer_addr, Reason(cause, f"{summary}: " + "; ".join(reasons))
        )

    async def _ask_rendezvous(self, via_addr: Address, kind: FrameKind, target: Address) -> Frame:
        """A punch or relay request about ``target``; ``NoRendezvousError`` when
        the rendezvous cannot help at all."""
        for attempt in range(RATE_LIMITED_RETRIES + 1):
            conn = self.engine.rendezvous_conn(via_addr, target)
            try:
                return await self._ask(conn, kind, encode_address(target))
            except ConnectionFailedError as exc:
                cause = exc.reason.cause
                if cause is not Cause.RATE_LIMITED or attempt == RATE_LIMITED_RETRIES:
                    # (Answers are refusals by cause; anything else is the
                    # connection to the rendezvous failing us.)
                    if cause is Cause.RENDEZVOUS:  # it does not know the peer
                        raise NoRendezvousError(target, exc.reason) from None
                    if cause in (Cause.RELAY, Cause.RATE_LIMITED, Cause.REFUSED):
                        raise ConnectionFailedError(target, exc.reason) from None
                    raise ConnectionFailedError(target, exc.reason.wrap("rendezvous: ")) from None
            await asyncio.sleep(RATE_LIMITED_PAUSE)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _punch_start(self, via_addr: Address, target: Address) -> NodeInfo:
        """Asks the rendezvous for a punch to ``target`` and waits out the start
        delay it gives; the other side as the rendezvous sees it."""
        answer = await self._ask_rendezvous(via_addr, FrameKind.PUNCH_REQUEST, target)
        try:
            delay_ms, other = decode_punch_info(answer.body)
        except WireError as exc:
            raise ConnectionFailedError(
                target, Reason(Cause.BAD_ANSWER, f"bad answer: {exc}")
            ) from None
        if other.peer_addr != target:
            # It knows the target at the address we named: anything else
            # would make us dial where it likes.
            raise ConnectionFailedError(
                target, Reason(Cause.BAD_ANSWER, "bad answer: it names another address")
            )
        await asyncio.sleep(delay_ms / 1000)
        return other

    async def _punch_once(self, node: NodeInfo, via_addr: Address) -> Peer:
        self.engine.count("punches: attempts")
        try:
            other = await self._punch_start(via_addr, node.peer_addr)
            peer = await self._connect_and_wait(
                NodeInfo(other.peer_addr, node.peer_cert_der or other.peer_cert_der),
                PUNCH_HANDSHAKE_TIMEOUT,
            )
        except ConnectionFailedError as exc:
            self.engine.count(f"punches: failed: {exc.reason.cause}")
            raise
        self.engine.count("punches: succeeded")
        return peer

    async def _connect_relayed(self, node: NodeInfo, via_addr: Address) -> Peer:
        busy = self.engine.relay_busy(node.peer_addr, via_addr)
        if busy is not None:
            raise ConnectionFailedError(node.peer_addr, busy)
        answer = await self._ask_rendezvous(via_addr, FrameKind.RELAY_REQUEST, node.peer_addr)
        return await self._connected(
            self.engine.connect_relayed(self._now(), node, via_addr, answer)
        )

    async def _upgrade_loop(self, addr: Address, via_addr: Address) -> None:
        for delay in RELAY_UPGRADE_DELAYS:
            await asyncio.sleep(delay)
            if not self.engine.is_relayed(addr):
                return
            with contextlib.suppress(ConnectionFailedError):
                if await self._try_upgrade(addr, via_addr):
                    return

    async def _try_upgrade(self, addr: Address, via_addr: Address) -> bool:
        """One punch for a relayed peer: both sides probe the direct path with
        a throwaway connection; each side that reaches the other (pinned
        certificate checked) sends its packets directly from then on."""
        self.engine.count("punches: attempts")
        try:
            other = await self._punch_start(via_addr, addr)
        except ConnectionFailedError as exc:
            self.engine.count(f"punches: failed: {exc.reason.cause}")
            raise
        node = NodeInfo(other.peer_addr, self.engine.peer_certificate(addr) or other.peer_cert_der)
        result = await self._wait(self.engine.probe_path(self._now(), addr, node))
        assert isinstance(result, ProbeResult)
        if result.reached:
            self.engine.count("punches: succeeded")
        else:
            self.engine.count(f"punches: failed: {Cause.PUNCH_FAILED}")
        return result.reached
