"""A network with its own CA: only nodes holding its certificates get in.

    python examples/private_ca.py

Creates a CA, issues certificates to two nodes, connects them in
TrustMode.PRIVATE_CA, then shows a node with a certificate from another CA
being refused. (The same with files: `quic-p2p certs create-ca` / `certs issue`,
then `quic-p2p node --trust-mode private-ca --ca ca.pem --cert n.pem --key n.key`.)
"""

from __future__ import annotations

import asyncio

from quic_p2p import Config, ConnectionFailedError, NodeInfo, QuicP2p, TrustMode
from quic_p2p.certfiles import create_ca, issue_certificate


def config(ca_der: bytes, cert: object) -> Config:
    return Config(
        ip="127.0.0.1",
        trust_mode=TrustMode.PRIVATE_CA,
        ca_certs_der=(ca_der,),
        our_complete_cert=cert,  # type: ignore[arg-type]
    )


async def main() -> None:
    ca = create_ca("example network CA")
    alice = config(ca.cert_der, issue_certificate(ca, "alice", ip_addresses=["127.0.0.1"]))
    bob = config(ca.cert_der, issue_certificate(ca, "bob", ip_addresses=["127.0.0.1"]))
    stranger_ca = create_ca("someone else")
    mallory = config(stranger_ca.cert_der, issue_certificate(stranger_ca, "mallory"))

    async with QuicP2p(alice) as a, QuicP2p(bob) as b, QuicP2p(mallory) as m:
        peer = await a.connect_to(NodeInfo(b.local_addr))
        print(f"alice connected to bob at {peer.peer_addr} (certificate checked against the CA)")
        try:
            await a.connect_to(NodeInfo(m.local_addr))
            print("alice connected to mallory: THIS SHOULD NOT HAPPEN")
        except ConnectionFailedError as exc:
            print(f"alice refused mallory: {exc.reason}")


if __name__ == "__main__":
    asyncio.run(main())
