"""The sans-IO core imports neither asyncio nor socket (design: three rings),
and what it still does besides computing — randomness, clocks, files, a
thread-local — is listed here and nowhere else grows it.

Checked on each module's own statements (AST): ``sys.modules`` cannot tell,
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
#: Imports, and calls, that make a module less than pure: its own
#: randomness, clock or files (an engine gets these injected).
IMPURE_MODULES = {"threading", "time", "tempfile", "secrets", "random"}
IMPURE_CALLS = {("os", "urandom"), ("datetime", "now"), ("datetime", "utcnow"), ("os", "replace")}
IMPURE_CALLS |= {("os", "fsync"), ("os", "open"), ("os", "write")}
FILE_METHODS = {"write_bytes", "write_text", "read_bytes", "read_text", "mkdir", "unlink"}
#: What each core module still does that a pure one would get injected, and
#: why it is still there. The test fails on anything new *and* on an entry
#: that no longer holds, so this list stays the true to-do list. Empty: the
#: driver injects randomness (``random_bytes=os.urandom``) and the time
#: (``now=``); file writers live in ``quic_p2p.certfiles``.
KNOWN_IMPURE: dict[str, set[str]] = {}


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


def _impure(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(f"import {a.name}" for a in node.names if a.name in IMPURE_MODULES)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in IMPURE_MODULES:
                found.add(f"from {node.module}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "open":
                found.add("open()")
            elif isinstance(func, ast.Attribute):
                base = func.value
                owner = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
                if (owner, func.attr) in IMPURE_CALLS:
                    found.add(f"{owner}.{func.attr}()")
                elif func.attr in FILE_METHODS:
                    found.add(f".{func.attr}()")
    return found


@pytest.mark.parametrize("module", SANS_IO)
def test_core_module_impurities_are_the_known_ones(module: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    assert _impure(Path(spec.origin)) == KNOWN_IMPURE.get(module, set())


def test_the_impurity_check_sees_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, time\nimport datetime\nfrom random import choice\n"
        "os.urandom(8)\ndatetime.datetime.now()\nopen('x')\npath.write_bytes(b'')\n"
    )
    assert _impure(sample) == {
        "import time",
        "from random",
        "os.urandom()",
        "datetime.now()",
        "open()",
        ".write_bytes()",
    }


def test_every_module_is_classified() -> None:
    """A new module must be added to SANS_IO or to the driver list here."""
    driver = {
        "quic_p2p.endpoint",
        "quic_p2p.cache_store",
        "quic_p2p.certfiles",
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
