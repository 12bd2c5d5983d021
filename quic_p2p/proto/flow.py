"""Reader-paced flow control for bidirectional streams.

aioquic grants a peer more credit on a stream whenever the data received
passes half the window (``_write_stream_limits`` doubles
``max_stream_data_local`` from the highest offset seen), whether or not the
application has read any of it: a peer that writes faster than we read would
make us buffer without bound. ``PeerConnection`` keeps aioquic's behaviour
for unidirectional streams (the message layer bounds those by declared
lengths, ``Link.receive_budget``) and, for bidirectional ones, moves the
window only when ``grant`` says so: the stream layer grants what the
application has consumed plus one window. A peer can then never have more
than the window in flight, unread, on one stream.

The private names read here (``_write_stream_limits``, the streams table, a
stream's ``max_stream_data_local`` and its sender's buffer offsets, the
initial bidirectional windows) are aioquic 1.x's; tests/test_streams.py
fails if aioquic renames them (a stream would then stall, or a peer that
never reads would grow our memory). It also counts the packets loss
recovery declares lost (``_loss._on_packets_lost``; tests/test_stats.py
fails if that is renamed: the count would stay 0).

Acknowledgements ride along with data. aioquic puts an ACK frame in a
1-RTT packet only once its ACK delay (1 ms) has passed since the packet to
acknowledge arrived, even when it is sending data now: a reply written at
once leaves without the ACK of its request, and the ACK follows alone at
the timer, one more packet per exchange (a request/response round trip
was 3.3 datagrams instead of 2). ``send_stream_data`` here makes a pending
ACK due at once, so it goes in the packet that carries the data (RFC 9000
§13.2.1 lets an endpoint acknowledge as early as it likes). This reads the
application space's ``ack_at`` (``_spaces``, aioquic 1.x);
tests/test_engine_pair.py fails if the ACK stops riding along.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY, QuicConnection
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketSpace
from aioquic.quic.stream import QuicStream

#: Credit a peer gets on a bidirectional stream it opens, before the stream
#: is accepted (a handler found, the peer proven): enough for a request or a
#: stream header and its first data, little to hold for one never accepted.
INITIAL_STREAM_WINDOW = 64 * 1024
#: Unread bytes a peer may have in flight on one accepted stream: the
#: application reading is what grants more. Bounds our memory per stream, and
#: a stream's throughput to one window per round trip (1 MiB per 10 ms).
STREAM_WINDOW = 1024 * 1024
#: What ``send_backlog`` reports when aioquic's internals are not as
#: expected: more than any bound a caller sets, so writers wait (fail closed).
UNREADABLE = 1 << 62


class PeerConnection(QuicConnection):
    """A ``QuicConnection`` whose bidirectional streams get credit only
    through ``grant`` (see the module docstring)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Advertised in our transport parameters: streams we open get a full
        # window at once (we chose to open them); streams the peer opens, a
        # small one until accepted.
        self._local_max_stream_data_bidi_local = STREAM_WINDOW
        self._local_max_stream_data_bidi_remote = INITIAL_STREAM_WINDOW
        #: Packets loss detection declared lost (a congestion event each;
        #: early retransmissions on a probe timeout are not losses).
        self.packets_lost = 0
        loss = getattr(self, "_loss", None)
        declare = getattr(loss, "_on_packets_lost", None)
        if loss is not None and callable(declare):

            def counted(*, packets: Any, congestion_event: bool = True, **kw: Any) -> Any:
                if congestion_event:
                    self.packets_lost += len(packets)
                return declare(packets=packets, congestion_event=congestion_event, **kw)

            loss._on_packets_lost = counted

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        super().send_stream_data(stream_id, data, end_stream)
        # A pending ACK goes with this data (module docstring): due "long
        # ago", so the next packet aioquic builds carries it.
        space = getattr(self, "_spaces", {}).get(tls.Epoch.ONE_RTT)
        if space is not None and getattr(space, "ack_at", None) is not None:
            space.ack_at = 0.0

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        # (Called for every stream in every packet aioquic builds: kept cheap.)
        sid = stream.stream_id
        if sid is None or sid & 2:  # unidirectional: aioquic's own rule
            super()._write_stream_limits(builder, space, stream)
        elif stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(sid)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def grant(self, stream_id: int, limit: int) -> bool:
        """Lets the peer send on ``stream_id`` up to offset ``limit`` (never
        lowers it); True when that raised the limit (a MAX_STREAM_DATA frame
        goes out with the next packet)."""
        stream = self._streams.get(stream_id)
        if stream is None or limit <= stream.max_stream_data_local:
            return False
        stream.max_stream_data_local = limit
        return True

    def send_backlog(self, stream_id: int) -> int:
        """Bytes written on ``stream_id`` that the peer has not acknowledged
        yet (queued or in flight): what we hold in memory for it. 0 for a
        stream aioquic has discarded (everything acknowledged)."""
        backlog = unacknowledged(self, stream_id)
        return 0 if backlog is None else backlog


def unacknowledged(quic: QuicConnection, stream_id: int) -> int | None:
    """Bytes written on ``stream_id`` that the peer has not acknowledged
    (its sender's buffer offsets, private to aioquic: this is the one place
    that reads them); None when aioquic holds no such stream (discarded, or
    never opened); ``UNREADABLE`` when its internals are not as expected."""
    streams = getattr(quic, "_streams", None)
    if not isinstance(streams, dict):
        return UNREADABLE
    stream = streams.get(stream_id)
    if stream is None:
        return None
    sender = getattr(stream, "sender", None)
    start = getattr(sender, "_buffer_start", None)
    stop = getattr(sender, "_buffer_stop", None)
    if not isinstance(start, int) or not isinstance(stop, int):
        return UNREADABLE
    return stop - start
