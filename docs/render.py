"""Renders the tables in docs/*.md from the code, between marker comments:

<!-- BEGIN name -->  ...generated...  <!-- END name -->

python docs/render.py          rewrite the docs
python docs/render.py --check  exit 1 if a doc is out of date (tests run this)
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path

import quic_p2p
from quic_p2p.accel import types
from quic_p2p.proto import wire
from quic_p2p.proto.roles import ON_CLIENT_HANDSHAKE, ON_NODE_HANDSHAKE, ON_OUTGOING_UP

DOCS = Path(__file__).resolve().parent


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _decision(d: tuple[object, object]) -> str:
    action, code = d
    name = getattr(action, "name", str(action))
    return f"{name}" + (f" ({getattr(code, 'name', code)})" if code is not None else "")


def role_tables() -> str:
    parts = []
    for title, table, state in (
        ("A Node handshake arrives on a new incoming connection", ON_NODE_HANDSHAKE, "to-peer"),
        ("A Client handshake arrives on a new incoming connection", ON_CLIENT_HANDSHAKE, "to-peer"),
        ("Our outgoing connection is up and our handshake sent", ON_OUTGOING_UP, "from-peer"),
    ):
        rows = [[f"`{getattr(k, 'name', k)}`", _decision(v)] for k, v in table.items()]
        parts.append(f"**{title}** (by our {state} state):\n\n" + _table([state, "then"], rows))
    parts.append(
        "Any role handshake on an incoming connection whose from-peer side is already "
        "established is rejected with `DUPLICATE_HANDSHAKE`."
    )
    return "\n\n".join(parts)


def frame_kinds() -> str:
    bodies = {
        "HANDSHAKE_NODE": "the sender's certificate (DER)",
        "HANDSHAKE_CLIENT": "empty; the Node ACKs its `msg_id` once it accepted the Client",
        "ECHO_REQUEST": "empty; `msg_id` correlates the answer",
        "ECHO_RESPONSE": "the requester's address as seen: 4 or 16 IP octets + 2-byte port",
        "USER_MESSAGE": "the user's bytes; `msg_id` is acknowledged",
        "ACK": "the `msg_id`s received, 8 bytes each",
        "REJECT": "one byte, the reason; `msg_id` is the refused message",
        "PUNCH_REQUEST": "to a rendezvous: the target's address; `msg_id` correlates the answer",
        "PUNCH_INFO": "from a rendezvous: u16 start delay (ms), u8 address length, the other "
        "side's address as the rendezvous sees it, its certificate; `msg_id` of the request, "
        "or 0 for the target",
        "RELAY_REQUEST": "to a relay: the target's address; `msg_id` correlates the answer",
        "RELAY_OPEN": "from a relay: u32 session, u8 address length, the other side's address "
        "as the relay sees it, its certificate; `msg_id` of the request, or 0 for the target",
        "RELAY_PACKET": "one QUIC datagram of the two sides' own connection; `msg_id`: the "
        "session, with bit 63 set when the relay sends it",
        "RELAY_CLOSE": "u8 `DIRECT` (the sender now sends directly) or `CLOSED`, then a UTF-8 "
        "reason; `msg_id` as for `RELAY_PACKET`",
        "REACH_REQUEST": "empty: dial me from a fresh socket; `msg_id` correlates the answer",
        "REACH_RESULT": "u8 reached (0 or 1), then the address dialled (the requester's as seen); "
        "`msg_id` of the request",
    }
    missing = {k.name for k in types.FrameKind} - set(bodies)
    if missing:
        raise SystemExit(f"docs/render.py: describe the body of {sorted(missing)}")
    rows = [[str(int(k)), f"`{k.name}`", bodies[k.name]] for k in types.FrameKind]
    return _table(["kind", "name", "body"], rows)


def error_codes() -> str:
    rows = [[f"`{int(c):#04x}`", f"`{c.name}`"] for c in wire.ErrorCode]
    rows += [[f"`{int(r)}`", f"reject reason `{r.name}`"] for r in wire.RejectReason]
    rows += [[f"`{int(c):#04x}`", f"stream code `{c.name}`"] for c in wire.StreamCode]
    return _table(["code", "meaning"], rows)


def constants() -> str:
    rows = [
        ["frame header", f"{types.FRAME_HEADER_SIZE} bytes, version {types.FRAME_VERSION}"],
        ["small message (control stream) up to", f"{wire.SMALL_MESSAGE_MAX} bytes"],
        ["control frame at most", f"{wire.CONTROL_FRAME_MAX} bytes"],
        ["ids per ACK frame at most", str(wire.ACK_BATCH_MAX)],
        [
            "retry token",
            f"{types.TOKEN_FIXED}..{types.TOKEN_MAX} bytes, version {types.TOKEN_VERSION}",
        ],
    ]
    return _table(["what", "value"], rows)


def _summary(path: Path) -> str:
    """A module docstring's first sentence, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = " ".join(doc.split())
    end = text.find(". ")
    return (text if end < 0 else text[: end + 1]).replace("|", "\\|")


def module_map() -> str:
    """The two rings, module by module, from the files on disk."""
    package = Path(quic_p2p.__file__).resolve().parent
    rows = []
    for ring, folder in (("engine (sans-IO)", "proto"), ("driver (asyncio)", "aio")):
        for path in sorted((package / folder).glob("*.py")):
            if path.name != "__init__.py":
                rows.append([ring, f"`{folder}/{path.name}`", _summary(path)])
    return _table(["ring", "module", "holds"], rows)


RENDERERS: dict[str, Callable[[], str]] = {
    "module-map": module_map,
    "role-tables": role_tables,
    "frame-kinds": frame_kinds,
    "error-codes": error_codes,
    "wire-constants": constants,
}


def render(text: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"<!-- BEGIN {name} -->\n{RENDERERS[name]()}\n<!-- END {name} -->"

    return re.sub(r"<!-- BEGIN ([\w-]+) -->.*?<!-- END \1 -->", sub, text, flags=re.S)


def main(check: bool) -> int:
    stale = []
    for doc in sorted(DOCS.glob("*.md")):
        old = doc.read_text()
        new = render(old)
        if new != old:
            stale.append(doc.name)
            if not check:
                doc.write_text(new)
    if check and stale:
        print("out of date (run python docs/render.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv))
