"""The sans-IO core imports neither asyncio nor socket (design: three rings).

Checked on each module's own import statements: ``sys.modules`` cannot tell,
since cryptography's x509 pulls in ``socket`` through ``email.utils``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import quic_p2p

SANS_IO = [
    "quic_p2p.accel",
    "quic_p2p.accel.types",
    "quic_p2p.accel.pyimpl.framing",
    "quic_p2p.accel.pyimpl.classify",
    "quic_p2p.accel.pyimpl.tokens",
    "quic_p2p.accel.pyimpl.lru",
    "quic_p2p.accel.cimpl.framing",
    "quic_p2p.accel.cimpl.classify",
    "quic_p2p.accel.cimpl.tokens",
    "quic_p2p.accel.cimpl.lru",
    "quic_p2p.admission",
    "quic_p2p.bootstrap_cache",
    "quic_p2p.certs",
    "quic_p2p.config",
    "quic_p2p.errors",
    "quic_p2p.events",
    "quic_p2p.link",
    "quic_p2p.peer",
    "quic_p2p.ratelimit",
    "quic_p2p.roles",
    "quic_p2p.scope",
    "quic_p2p.tls",
    "quic_p2p.wire",
]
FORBIDDEN = {"asyncio", "socket", "selectors"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", SANS_IO)
def test_core_module_does_no_io(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    assert not _imports(Path(spec.origin)) & FORBIDDEN


def test_every_module_is_classified() -> None:
    """A new module must be added to SANS_IO or to the driver list here."""
    driver = {
        "quic_p2p.endpoint",
        "quic_p2p.cache_store",
        "quic_p2p.demo",
        "quic_p2p.channel",
        "quic_p2p.cli",
        "quic_p2p.cli_node",
        "quic_p2p.__main__",
        "quic_p2p.selfcheck",
        "quic_p2p",
        "quic_p2p.accel.cimpl._ffi",
        "quic_p2p.accel.cimpl",
        "quic_p2p.accel.pyimpl",
    }
    root = Path(quic_p2p.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.add(name)
    assert found - set(SANS_IO) - driver == set()
