"""Two ``Link``s over two aioquic connections wired back to back in memory,
on a fake clock: no sockets, no event loop (in the style of aioquic's
``client_and_server`` and quinn's ``Pair``).

    pair = LinkPair()
    pair.handshake()                    # TLS, both sides LinkUp
    msg_id = pair.client.send_user_message(b"hi")
    pair.pump()                         # until neither side has anything to send
    pair.server_events                  # LinkEvents seen by the server, in order
    pair.advance(31)                    # the clock moves on; timers fire

Datagrams cross instantly unless ``drop`` says otherwise (``drop = {"to_server"}``
cuts that direction). The server side asks for the client's certificate, as
our Nodes do (``tls.ServerConnection``).
"""

from __future__ import annotations

from aioquic.quic.connection import QuicConnection

from quic_p2p import Config, NodeInfo, certfiles
from quic_p2p.proto import tls
from quic_p2p.proto.link import Link, LinkEvent

CLIENT_ADDR = ("127.0.0.1", 1111)
SERVER_ADDR = ("127.0.0.1", 2222)
#: Bounded loops: rounds of pumping, each moving every queued datagram.
MAX_ROUNDS = 10_000
#: How far ahead a timer may be for ``pump`` to wait for it (aioquic's pacing).
PACING_SLACK = 0.02


class LinkPair:
    def __init__(self, config: Config | None = None, *, max_msg_size: int = 1 << 20) -> None:
        self.config = config or Config(ip="127.0.0.1", idle_timeout_msec=30_000)
        self.now = 1_000.0
        self.client_cert = certfiles.generate_self_signed("client")
        self.server_cert = certfiles.generate_self_signed("server")
        client_cfg = tls.client_configuration(
            self.config,
            NodeInfo(SERVER_ADDR, self.server_cert.cert_der),
            our_cert=self.client_cert,
            connection_id_length=8,
        )
        self.client_quic = QuicConnection(configuration=client_cfg)
        self.server_quic = tls.ServerConnection(
            configuration=tls.server_configuration(
                self.config, self.server_cert, connection_id_length=8
            ),
            original_destination_connection_id=self.client_quic.original_destination_connection_id,
        )
        self.client = Link(
            self.client_quic, initiator=True, peer_addr=SERVER_ADDR, max_msg_size=max_msg_size
        )
        self.server = Link(
            self.server_quic, initiator=False, peer_addr=CLIENT_ADDR, max_msg_size=max_msg_size
        )
        self.client_events: list[LinkEvent] = []
        self.server_events: list[LinkEvent] = []
        self.drop: set[str] = set()
        self.client_quic.connect(SERVER_ADDR, now=self.now)

    # ------------------------------------------------------------ driving
    def pump(self) -> None:
        """Moves datagrams both ways until quiet. aioquic paces its packets
        (a timer a few milliseconds ahead), so a timer due within
        ``PACING_SLACK`` moves the clock to it: sending takes a little time."""
        for _ in range(MAX_ROUNDS):
            moved = self._move(self.client_quic, self.server_quic, "to_server", CLIENT_ADDR)
            moved += self._move(self.server_quic, self.client_quic, "to_client", SERVER_ADDR)
            self._fire_timers()
            if moved:
                continue
            soon = [t for t in self._timers() if t - self.now <= PACING_SLACK]
            if not soon:
                return
            self.now = max(self.now, min(soon))
            self._fire_timers()
        raise AssertionError("the pair never went quiet")

    def _timers(self) -> list[float]:
        return [t for t in (self.client_quic.get_timer(), self.server_quic.get_timer()) if t]

    def handshake(self) -> None:
        self.pump()
        assert self.client.up and self.server.up, "TLS did not complete"

    def advance(self, seconds: float) -> None:
        """Moves the clock on in steps no longer than the next timer, pumping."""
        end = self.now + seconds
        for _ in range(MAX_ROUNDS):
            timers = [t for t in (self.client_quic.get_timer(), self.server_quic.get_timer()) if t]
            step = min([end, *timers])
            self.now = max(self.now, step)
            self._fire_timers()
            self.pump()
            if self.now >= end:
                return
        raise AssertionError("the clock never reached its end")

    # ------------------------------------------------------------ inside
    def _move(self, frm: QuicConnection, to: QuicConnection, direction: str, src: tuple) -> int:
        datagrams = frm.datagrams_to_send(now=self.now)
        if direction not in self.drop:
            for data, _addr in datagrams:
                to.receive_datagram(data, src, now=self.now)
        self._drain()
        return len(datagrams)

    def _fire_timers(self) -> None:
        for quic in (self.client_quic, self.server_quic):
            at = quic.get_timer()
            if at is not None and at <= self.now:
                quic.handle_timer(now=self.now)
        self._drain()

    def _drain(self) -> None:
        for quic, link, seen in (
            (self.client_quic, self.client, self.client_events),
            (self.server_quic, self.server, self.server_events),
        ):
            for _ in range(MAX_ROUNDS):
                event = quic.next_event()
                if event is None:
                    break
                seen.extend(link.handle(event))
            link.flush()
