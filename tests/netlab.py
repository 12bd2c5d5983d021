"""A NAT lab from Linux network namespaces, veth links and nftables.

Topology (every address lives only inside namespaces the lab creates)::

    [rdv]  203.0.113.10 ─┐
    [pub2] 203.0.113.11 ─┤
                         ├── br0 in [inet] (the "public internet", 203.0.113.0/24)
    [nat1] 203.0.113.21 ─┤            [nat1] 10.1.0.1 ── [host1] 10.1.0.2
    [nat2] 203.0.113.22 ─┘            [nat2] 10.2.0.1 ── [host2] 10.2.0.2

Each NAT namespace forwards its host's traffic to the public segment and
rewrites the source with nftables, by behaviour:

- ``cone``: ``masquerade persistent`` — endpoint-independent mapping (the same
  public port whatever the destination, as Linux keeps the source port) with
  Linux conntrack's address-and-port-dependent filtering (a "port-restricted
  cone"): only peers the host has sent to may answer.
- ``full-cone``: as ``cone``, plus inbound UDP to the public address forwarded
  to the host (endpoint-independent filtering).
- ``symmetric``: ``masquerade fully-random`` — a new random public port for
  every destination (address-and-port-dependent mapping).

Every NAT drops unsolicited inbound packets addressed to itself (no ICMP).

A NAT that forgets its mappings mid-connection (a rebinding, as after a
router reboot or a conntrack timeout) is :meth:`NetLab.flush_conntrack`; it
needs the ``conntrack`` tool (:func:`missing_conntrack`).

Run as a script (``ci/netlab up|down|status``) or through the ``netlab``
pytest fixture (tests/conftest.py). Needs root, ``ip netns`` and ``nft``;
:func:`missing_capability` says what is missing so tests can skip cleanly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

PUBLIC_NET = "203.0.113"  # TEST-NET-3 (RFC 5737), only inside the lab's namespaces
RDV_ADDR = f"{PUBLIC_NET}.10"
PUB2_ADDR = f"{PUBLIC_NET}.11"  # a second public host, to observe NAT mappings from two places
NAT_BEHAVIOURS = ("cone", "full-cone", "symmetric")


def missing_capability() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the NAT lab needs root"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"the NAT lab needs `{tool}` (apt-get install iproute2 nftables)"
    # Per process: two test runs (or pytest-xdist workers) may probe at once.
    probe = f"qp2p-probe{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "netns", "del", probe)
    except subprocess.CalledProcessError as exc:
        return f"cannot create network namespaces: {exc.stderr.strip()}"
    return None


def missing_conntrack() -> str | None:
    """Why :meth:`NetLab.flush_conntrack` cannot run here, or None. Flushing
    the ruleset (``nft flush ruleset``) is not the same: established flows
    keep their mappings in conntrack, whatever the rules say."""
    if shutil.which("conntrack") is None:
        return "forgetting NAT mappings needs `conntrack` (apt-get install conntrack)"
    return None


def _run(*cmd: str, input: str | None = None) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, input=input, check=True, timeout=30)
    return out.stdout


@dataclass
class PrivateHost:
    index: int
    behaviour: str
    ns: str
    nat_ns: str

    @property
    def address(self) -> str:
        return f"10.{self.index}.0.2"

    @property
    def public_address(self) -> str:
        return f"{PUBLIC_NET}.{20 + self.index}"


@dataclass
class NetLab:
    """The lab: ``prefix`` names every namespace, so labs never collide."""

    prefix: str = "qp2p"
    behaviours: Sequence[str] = ("cone", "cone")
    hosts: list[PrivateHost] = field(default_factory=list)

    @property
    def inet(self) -> str:
        return f"{self.prefix}-inet"

    @property
    def rdv(self) -> str:
        return f"{self.prefix}-rdv"

    @property
    def pub2(self) -> str:
        return f"{self.prefix}-pub2"

    def namespaces(self) -> list[str]:
        names = [self.inet, self.rdv, self.pub2]
        for h in self.hosts:
            names += [h.nat_ns, h.ns]
        return names

    # ------------------------------------------------------------ build
    def up(self) -> NetLab:
        for b in self.behaviours:
            if b not in NAT_BEHAVIOURS:
                raise ValueError(f"unknown NAT behaviour {b!r}; one of {NAT_BEHAVIOURS}")
        self.down()  # leftovers of a crashed run
        self.hosts = [
            PrivateHost(i + 1, b, f"{self.prefix}-host{i + 1}", f"{self.prefix}-nat{i + 1}")
            for i, b in enumerate(self.behaviours)
        ]
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        for ns in self.namespaces():
            _run("ip", "netns", "add", ns)
            self.ns_run(ns, "ip", "link", "set", "lo", "up")
        self.ns_run(self.inet, "ip", "link", "add", "br0", "type", "bridge")
        self.ns_run(self.inet, "ip", "link", "set", "br0", "up")
        self._attach_public(self.rdv, "rdv", RDV_ADDR)
        self._attach_public(self.pub2, "pub2", PUB2_ADDR)
        for h in self.hosts:
            self._attach_public(h.nat_ns, f"n{h.index}", h.public_address)
            # LAN link between the NAT and its host.
            lan_nat, lan_host = f"l{h.index}n", f"l{h.index}h"
            _run(
                "ip",
                "link",
                "add",
                lan_nat,
                "netns",
                h.nat_ns,
                "type",
                "veth",
                "peer",
                "name",
                lan_host,
                "netns",
                h.ns,
            )
            self.ns_run(h.nat_ns, "ip", "addr", "add", f"10.{h.index}.0.1/24", "dev", lan_nat)
            self.ns_run(h.nat_ns, "ip", "link", "set", lan_nat, "up")
            self.ns_run(h.ns, "ip", "addr", "add", f"{h.address}/24", "dev", lan_host)
            self.ns_run(h.ns, "ip", "link", "set", lan_host, "up")
            self.ns_run(h.ns, "ip", "route", "add", "default", "via", f"10.{h.index}.0.1")
            self.ns_run(h.nat_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self._nat_rules(h, wan="wan")

    def _attach_public(self, ns: str, tag: str, address: str) -> None:
        outside, inside = f"p{tag}", "wan"
        _run(
            "ip",
            "link",
            "add",
            outside,
            "netns",
            self.inet,
            "type",
            "veth",
            "peer",
            "name",
            inside,
            "netns",
            ns,
        )
        self.ns_run(self.inet, "ip", "link", "set", outside, "master", "br0")
        self.ns_run(self.inet, "ip", "link", "set", outside, "up")
        self.ns_run(ns, "ip", "addr", "add", f"{address}/24", "dev", inside)
        self.ns_run(ns, "ip", "link", "set", inside, "up")

    def _nat_rules(self, h: PrivateHost, wan: str) -> None:
        flags = {"cone": "persistent", "full-cone": "persistent", "symmetric": "fully-random"}
        rules = [
            "table ip nat {",
            "  chain postrouting { type nat hook postrouting priority srcnat;",
            f'    oifname "{wan}" ip saddr 10.{h.index}.0.0/24 masquerade {flags[h.behaviour]}',
            "  }",
        ]
        if h.behaviour == "full-cone":
            # Endpoint-independent filtering: anything reaching the public
            # address on UDP goes to the host (the mapped port is the host's).
            rules += [
                "  chain prerouting { type nat hook prerouting priority dstnat;",
                f'    iifname "{wan}" ip daddr {h.public_address} udp dport 1024-65535 '
                f"dnat to {h.address}",
                "  }",
            ]
        rules.append("}")
        # Unsolicited inbound packets are dropped, as a home router does (not
        # answered with ICMP). Dropped in the input hook, their conntrack entry
        # is never confirmed, so one arriving before our own outgoing packet
        # does not claim the port mapping a hole punch is about to use.
        rules += [
            "table ip filter {",
            "  chain input { type filter hook input priority filter;",
            f'    iifname "{wan}" ct state new drop',
            "  }",
            "}",
        ]
        self.ns_run(h.nat_ns, "nft", "-f", "-", input="\n".join(rules) + "\n")

    # ------------------------------------------------------------ use
    def ns_run(self, ns: str, *cmd: str, input: str | None = None) -> str:
        return _run("ip", "netns", "exec", ns, *cmd, input=input)

    def flush_conntrack(self, ns: str) -> str:
        """Empties namespace ``ns``'s conntrack table (``conntrack -F``): a NAT
        there forgets every mapping, so each flow's next outgoing packet gets
        a new one (a new public port under ``fully-random``; under
        ``persistent`` Linux keeps the source port when it is free). Returns
        conntrack's report (how many entries went)."""
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "conntrack", "-F"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return (out.stdout + out.stderr).strip()

    def udp_mappings(self, ns: str) -> dict[tuple[str, int, str, int], tuple[str, int]]:
        """The UDP mappings a NAT in namespace ``ns`` holds now (``conntrack
        -L``): each flow's original (source, source port, destination,
        destination port) -> the public (address, port) it was mapped to."""
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "conntrack", "-L", "-p", "udp"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        found: dict[tuple[str, int, str, int], tuple[str, int]] = {}
        for line in out.stdout.splitlines():
            fields: dict[str, list[str]] = {}
            for word in line.split():
                key, eq, value = word.partition("=")
                if eq:
                    fields.setdefault(key, []).append(value)
            if len(fields.get("src", ())) < 2 or len(fields.get("dport", ())) < 2:
                continue
            # The original tuple first, then the reply's: the reply goes to
            # the public address and port the flow was mapped to.
            src, sport = fields["src"][0], int(fields["sport"][0])
            dst, dport = fields["dst"][0], int(fields["dport"][0])
            found[(src, sport, dst, dport)] = (fields["dst"][1], int(fields["dport"][1]))
        return found

    def popen(self, ns: str, *cmd: str, **kwargs: object) -> subprocess.Popen[str]:
        """A process inside namespace ``ns``."""
        argv = ["ip", "netns", "exec", ns, *cmd]
        return subprocess.Popen(argv, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    def down(self) -> None:
        """Deletes every namespace of this lab (veths go with them)."""
        existing = set(_run("ip", "netns", "list").split())
        for ns in [*self.namespaces(), *(n for n in existing if n.startswith(self.prefix + "-"))]:
            if ns in existing:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
                existing.discard(ns)


def main(argv: list[str]) -> int:
    usage = "usage: netlab up [cone|full-cone|symmetric ...] | down | status"
    if not argv or argv[0] not in ("up", "down", "status"):
        print(usage, file=sys.stderr)
        return 2
    reason = missing_capability()
    if reason is not None:
        print(f"netlab: {reason}", file=sys.stderr)
        return 1
    lab = NetLab(behaviours=tuple(argv[1:]) or ("cone", "cone"))
    if argv[0] == "up":
        lab.up()
        print("namespaces:", " ".join(lab.namespaces()))
    elif argv[0] == "down":
        lab.down()
    else:
        print(_run("ip", "netns", "list"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
