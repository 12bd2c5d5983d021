"""The protocol's limits and timings, in one place.

Plain numbers, read by the engine (``proto``) and by the driver's strategies
(``aio``): a newcomer tuning a timeout finds it here.
"""

#: Length of the connection IDs we issue (aioquic's default); short headers
#: carry no length, so the demultiplexer must know it.
CID_LENGTH = 8
#: An incoming connection must send its role handshake (or an echo request)
#: within this time, or it is closed.
HANDSHAKE_TIMEOUT = 10.0
#: A Node that dialled us must be reachable back within this time.
REVERSE_CONNECT_TIMEOUT = 10.0
#: Requests to a peer (echo, punch, relay) wait this long for the answer,
#: the connection coming up included; a reachability check adds the time
#: the checker takes to dial us back (PROBE_TIMEOUT).
ECHO_TIMEOUT = 5.0
#: How many nodes ``our_connection_info`` asks at most.
ECHO_QUORUM = 3
#: Messages a not-yet-proven Node may send before it is connected (held,
#: unacknowledged, until the reverse connection completes).
MAX_PENDING_READS = 256
#: Bytes of messages we hold at once for all peers not yet proven, arriving
#: or complete (a claimed Node before its reverse connection succeeds): an
#: honest Node sends only once connected, so little is needed, and an
#: unproven peer must not make us buffer what it likes.
UNPROVEN_MAX_BYTES = 4 * 1024 * 1024
#: Bytes of large messages (each on a stream of its own) we receive at once
#: on one connection, counted by their declared length from their first
#: bytes on (at least ``max_msg_size_allowed``, so one maximal message always
#: fits): a message stream beyond it is refused (BUSY) unbuffered, so a peer
#: cannot make us buffer MAX_ACTIVE_LARGE maximal messages at once.
RECEIVE_BUDGET = 64 * 1024 * 1024
#: New user messages waiting in ``events()`` before further ones are refused
#: (unsent at their sender). Other events never count against it.
DEFAULT_EVENT_CAPACITY = 65_536
#: A connection with sends outstanding that the peer acknowledges nothing of
#: for this long is closed, every send on it unsent: a peer that stops
#: acknowledging (or withholds flow-control credit) cannot hold sends forever.
DEFAULT_SEND_TIMEOUT = 60.0
#: Bytes of user messages handed to one connection and not yet acknowledged;
#: further sends wait (``send()`` returns later) until acknowledgements make
#: room, so a slow or stalled peer bounds what we buffer for it.
DEFAULT_MAX_UNACKED_BYTES = 64 * 1024 * 1024
#: Incoming connections from one IPv4 address (one IPv6 /64) at once; more
#: are refused (CONNECTION_REFUSED), so one host cannot take every slot.
DEFAULT_MAX_CONNECTIONS_PER_IP = 32
#: Hole punching: attempts per connect_to(via=...), the QUIC handshake
#: timeout of each (Initials are retransmitted within it), the pause between
#: attempts (doubled each time), and the margin the rendezvous adds to the
#: start delays it derives from its round-trip times to both sides.
PUNCH_ATTEMPTS = 3
PUNCH_HANDSHAKE_TIMEOUT = 3.0
PUNCH_BACKOFF = 0.25
PUNCH_START_DELAY_MS = 50
#: Punches a node will join at once when a rendezvous asks (abuse bound).
PUNCH_MAX_PENDING = 16
#: Dials a rendezvous may start at our side with unrequested PUNCH_INFO
#: notices (token buckets: burst, then per second), per rendezvous and in
#: all; beyond them notices are declined and counted. A punch sends a few
#: Initials (about four in PUNCH_HANDSHAKE_TIMEOUT), so this bounds what a
#: hostile Node can make us send to addresses it names.
PUNCH_NOTICE_BURST = 8
PUNCH_NOTICE_RATE = 2.0
PUNCH_DIAL_BURST = 16
PUNCH_DIAL_RATE = 4.0
#: As a rendezvous: punch and relay requests one asker may make (a token
#: bucket: burst, then per second); beyond it they are refused
#: (RATE_LIMITED), so an asker cannot make us flood the Node it names. An
#: asker refused so waits RATE_LIMITED_PAUSE and asks again, up to
#: RATE_LIMITED_RETRIES times, so honest bursts (many connect_to at once)
#: are paced rather than failed.
RENDEZVOUS_REQUEST_BURST = 16
RENDEZVOUS_REQUEST_RATE = 4.0
RATE_LIMITED_PAUSE = 0.5
RATE_LIMITED_RETRIES = 8
#: As a relay: bytes of forwarded packets we hold for one side that has not
#: acknowledged them (it stopped reading, or withholds flow-control credit);
#: packets beyond it are dropped, like a full router queue — the two sides'
#: own QUIC recovers them — so a stalled side costs at most this much memory.
RELAY_MAX_BACKLOG = 1024 * 1024
#: A relayed peer: after the first punch failed and the relay connected,
#: the remaining punches are tried in the background at these delays
#: (seconds, one after the other), then less often; a success moves the
#: connection to the direct path (UpgradedToDirect).
RELAY_UPGRADE_DELAYS = (0.25, 0.5, 30.0, 60.0, 120.0, 240.0)
#: Relay sessions we take part in at once (as either side, not as relay).
RELAY_MAX_PATHS = 64
#: Bit set in the session id of RELAY_PACKET/RELAY_CLOSE frames sent by the
#: relay, so a peer that relays for us while we relay for it never confuses
#: the two directions.
FROM_RELAY = 1 << 63
#: Probes (a relayed pair's direct path, a reachability check from a fresh
#: socket) are throwaway connections given this long to complete TLS.
PROBE_TIMEOUT = PUNCH_HANDSHAKE_TIMEOUT
#: Reachability checks a node runs for others at once.
REACH_MAX_PENDING = 4
#: Bootstrap contacts dialled at once.
BOOTSTRAP_PARALLEL = 8
#: A bootstrap gives up after this long, whatever is still in flight.
BOOTSTRAP_TIMEOUT = 60.0
#: A bootstrap contact that refused us (busy: too many joining at once, or
#: its limits) is tried again after a pause, up to BOOTSTRAP_ATTEMPTS times
#: in all: a seed working through a boot storm takes the latecomers in
#: turn. The pause starts at BOOTSTRAP_RETRY_DELAY and doubles up to
#: BOOTSTRAP_RETRY_MAX, each drawn from 0.5-1.5x of it, so a storm's retries
#: spread out (0.5 + 1 + 2 + 4 + 8 + 8 + 8 s at most: within the timeout).
BOOTSTRAP_ATTEMPTS = 8
BOOTSTRAP_RETRY_DELAY = 0.5
BOOTSTRAP_RETRY_MAX = 8.0
#: Incoming connections not yet a connected peer (handshakes, role
#: handshakes, reverse connections under way) a Node takes at once; beyond,
#: new ones are refused at their first packet (cheap: no handshake), and a
#: bootstrapping Node tries again later. Joins are CPU-bound (~10 ms each):
#: this many finish well within the handshake and reverse-connection
#: timeouts, where a thousand at once would not.
MAX_JOINING = 128
#: Once half of MAX_JOINING are taken, one IPv4 address (one IPv6 /64) may
#: add joins only while it has fewer than this many: hosts that open
#: handshakes and never finish them then need ten validated addresses to
#: hold every slot (two fill the first half, within the per-IP limit),
#: while a host running many Nodes still connects them all at once when
#: the Node is not under that pressure.
MAX_JOINING_PER_IP = 8
#: Cache changes within this window are written to disk together.
CACHE_SAVE_DELAY = 0.05
#: Default cap on concurrent QUIC connections of one endpoint. A Node peer
#: holds two (one dialled each way, the reachability proof), a Client one,
#: and handshakes in progress hold theirs: 2,500 fits 1,000 Node peers with
#: a boot storm's handshakes in flight (1,000 let ~380 of 1,000 Nodes
#: storming one seed in, bench/network.py).
DEFAULT_MAX_CONNECTIONS = 2_500
#: Ended connections whose last state ``Engine.connection(id)`` still gives.
RECENTLY_CLOSED = 256

#: Datagrams received and not yet read, per endpoint; beyond, new ones are
#: dropped and counted (``stats["datagrams dropped: queue full"]``).
DATAGRAM_QUEUE_CAPACITY = 4096

#: Incoming bidirectional streams one peer connection may have open at once
#: (``QuicP2p(max_streams_per_peer=)``); beyond, new ones are refused BUSY.
#: With ``flow.STREAM_WINDOW`` this bounds what one peer's streams make us
#: hold (64 MiB) whatever it sends.
DEFAULT_MAX_STREAMS_PER_PEER = 64
#: Incoming streams of one protocol open at once, all peers together
#: (``set_stream_handler(max_streams=)``).
DEFAULT_MAX_STREAMS_PER_PROTOCOL = 1024
#: Largest request a request handler takes, and largest reply ``request``
#: takes, by default (bytes; ``max_request_size=``, ``max_reply_size=``).
DEFAULT_MAX_REQUEST_SIZE = 1024 * 1024
DEFAULT_MAX_REPLY_SIZE = 1024 * 1024
#: ``request`` waits this long for the reply by default (seconds).
DEFAULT_REQUEST_TIMEOUT = 30.0
#: A stream writer's ``drain`` waits once more than DRAIN_HIGH_WATER bytes
#: are unacknowledged, until no more than DRAIN_LOW_WATER are: enough queued
#: to keep one stream window in flight.
DRAIN_HIGH_WATER = 2 * 1024 * 1024
DRAIN_LOW_WATER = 1024 * 1024
