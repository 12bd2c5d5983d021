"""Draws docs/upgrade.png: RTT and throughput of one peer over time while a
relayed connection is upgraded to direct, measured in the NAT lab.

    sudo python docs/upgrade_plot.py [--out docs/upgrade.png] [--seconds 8]

Builds the lab (tests/netlab.py: two Nodes behind cone NATs and a relaying
rendezvous on the public side), connects the two through the relay with
punching off, then has one side send 16 KiB messages (32 in flight) while it
samples ``peer_stats`` every 50 ms; halfway through, one punch
(``connect_to(via=...)``) moves the connection to the direct path
(``PathChanged``). Needs root, iproute2 and nftables, and matplotlib
(``pip install ".[perf]"``); the samples also go to ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_nat import RELAY, Agent, _as_seen, _punch_lab  # noqa: E402

from netlab import NetLab, missing_capability  # noqa: E402


def measure(seconds: float) -> dict[str, list[list[object]] | list[float]]:
    lab = NetLab(prefix=f"qp2p{os.getpid() % 10000}", behaviours=("cone", "cone")).up()
    agents: list[Agent] = []
    lab.agents = agents  # type: ignore[attr-defined]
    try:
        rdv, a, b = _punch_lab(lab, relay=True)
        agents += [rdv, a, b]
        target = _as_seen(rdv, b, lab.hosts[1].public_address)
        answer = a.ask("connect", contact=target, via=RELAY, punch=False, timeout=90)
        assert "ok" in answer, answer
        a.ask("inbox")
        out = a.ask(
            "trace",
            to=target,
            via=RELAY,
            seconds=seconds,
            upgrade_at=seconds / 2,
            timeout=seconds + 60,
        )
        assert "ok" in out, out
        return out["ok"]  # type: ignore[return-value]
    finally:
        for agent in agents:
            agent.stop()
        lab.down()


def draw(trace: dict[str, list[list[object]] | list[float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = trace["samples"]
    ts = [float(str(s[0])) for s in samples]  # type: ignore[index]
    rtt = [1000 * float(str(s[2])) if s[2] is not None else float("nan") for s in samples]  # type: ignore[index]
    sent = [int(str(s[3])) for s in samples]  # type: ignore[index]
    rate = [0.0] + [
        (sent[i] - sent[i - 1]) / (ts[i] - ts[i - 1]) / 1e6 for i in range(1, len(samples))
    ]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    top.plot(ts, rtt, color="tab:blue")
    top.set_ylabel("smoothed RTT (ms)")
    bottom.plot(ts, rate, color="tab:green")
    bottom.set_ylabel("sent (MB/s)")
    bottom.set_xlabel("seconds")
    for axis in (top, bottom):
        for t in trace["changed"]:
            axis.axvline(float(str(t)), color="tab:red", linestyle="--")
    top.set_title("One peer, relayed then direct (PathChanged: dashed), NAT lab on loopback")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "upgrade.png")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    missing = missing_capability()
    if missing:
        print(f"cannot run the NAT lab: {missing}", file=sys.stderr)
        return 2
    trace = measure(args.seconds)
    args.out.with_suffix(".json").write_text(json.dumps(trace) + "\n")
    draw(trace, args.out)
    print(f"wrote {args.out} ({len(trace['samples'])} samples, path changed at {trace['changed']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
