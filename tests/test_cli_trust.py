"""The command line in a private-CA network: a Client (``quic-p2p echo``) must
present a certificate of the CA, and is served when it does."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import Proc, run


def test_echo_in_a_private_ca_network_needs_and_uses_a_ca_certificate(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert run("certs", "create-ca", "--name", "ca", "--out-dir", d).returncode == 0
    for name in ("node", "client"):
        issued = run(
            "certs", "issue", "--name", name, "--out-dir", d, "--ip", "127.0.0.1",
            "--ca-cert", f"{d}/ca.pem", "--ca-key", f"{d}/ca.key",
        )  # fmt: skip
        assert issued.returncode == 0, issued.stderr
    ca = ("--trust-mode", "private-ca", "--ca", f"{d}/ca.pem")
    node = Proc(
        "node", "--ip", "127.0.0.1", "--no-stdin", "--cache-dir", f"{d}/cache", *ca,
        "--cert", f"{d}/node.pem", "--key", f"{d}/node.key",
    )  # fmt: skip
    try:
        info_json = node.expect("Our connection info:").split(":", 1)[1].strip()
        addr = json.loads(info_json)["addresses"][0]
        anonymous = run("echo", addr, "--ip", "127.0.0.1", *ca, timeout=60)
        assert anonymous.returncode == 1
        assert "--cert/--key" in anonymous.stderr and "Traceback" not in anonymous.stderr
        echo = run(
            "echo", addr, "--ip", "127.0.0.1", *ca,
            "--cert", f"{d}/client.pem", "--key", f"{d}/client.key", timeout=60,
        )  # fmt: skip
        assert echo.returncode == 0, echo.stderr
        assert echo.stdout.strip().startswith("127.0.0.1:")
    finally:
        assert node.stop() == 0
