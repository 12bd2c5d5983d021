"""The rings hold: the sans-IO engine (``quic_p2p/proto``), the hot paths
(``quic_p2p/accel``) and every module of ours they import do no I/O, read no
clock, draw no randomness of their own and never import the driver.

Walked from the files on disk (no hand-kept list): a new module under
``proto/`` or ``accel/`` is checked the day it appears, and so is anything
they start importing. Checked on each module's own statements (AST):
``sys.modules`` cannot tell, since cryptography's x509 pulls in ``socket``
through ``email.utils``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import quic_p2p

ROOT = Path(quic_p2p.__file__).parent
#: Modules that must not be imported at all below the driver.
FORBIDDEN_MODULES = {"asyncio", "socket", "selectors", "threading", "time", "tempfile"}
FORBIDDEN_MODULES |= {"secrets", "random", "subprocess"}
#: Calls that read a clock, draw randomness or touch files.
FORBIDDEN_CALLS = {("os", "urandom"), ("datetime", "now"), ("datetime", "utcnow")}
FORBIDDEN_CALLS |= {("datetime", "today"), ("date", "today"), ("os", "replace")}
FORBIDDEN_CALLS |= {("os", "fsync"), ("os", "open"), ("os", "write"), ("os", "remove")}
FORBIDDEN_CALLS |= {("os", "unlink"), ("os", "mkdir"), ("os", "makedirs"), ("os", "getpid")}
FILE_METHODS = {"write_bytes", "write_text", "read_bytes", "read_text", "mkdir", "unlink"}
#: Our modules the core may never import: the driver ring and the faces.
DRIVER = ("quic_p2p.aio", "quic_p2p.cli", "quic_p2p.cli_node", "quic_p2p.demo")
DRIVER += ("quic_p2p.channel", "quic_p2p.cache_store", "quic_p2p.selfcheck")
DRIVER += ("quic_p2p.certfiles", "quic_p2p.identity", "quic_p2p.__main__")
DRIVER += ("quic_p2p.doctor", "quic_p2p.metrics")
#: What a core module still does that a pure one would get injected, and why
#: (empty: the engine gets its clock, randomness and files from the driver).
#: The test fails on anything new *and* on an entry that no longer holds.
KNOWN_IMPURE: dict[str, set[str]] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _path_of(module: str) -> Path | None:
    base = ROOT.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(top-level names of outside imports, full names of our modules imported)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    outside: set[str] = set()
    ours: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
                # ``from . import x``: x may be a module of that package.
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "quic_p2p":
                if _path_of(name) is not None:
                    ours.add(name)
            else:
                outside.add(name.split(".")[0])
    return outside, ours


def _core() -> dict[str, Path]:
    """Every file under proto/ and accel/, and every module of ours they
    import, transitively."""
    todo = [p for sub in ("proto", "accel") for p in (ROOT / sub).rglob("*.py")]
    found: dict[str, Path] = {}
    while todo:
        path = todo.pop()
        name = _module_name(path)
        if name in found:
            continue
        found[name] = path
        for module in _imports(path)[1]:
            target = _path_of(module)
            if target is not None and module != "quic_p2p":
                todo.append(target)
    return found


CORE = _core()


def _impure(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(
                f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES
            )
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.add(f"from {node.module}")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "open":
                found.add("open()")
            elif isinstance(func, ast.Attribute):
                base = func.value
                owner = base.id if isinstance(base, ast.Name) else getattr(base, "attr", None)
                if (owner, func.attr) in FORBIDDEN_CALLS:
                    found.add(f"{owner}.{func.attr}()")
                elif func.attr in FILE_METHODS:
                    found.add(f".{func.attr}()")
    return found


def test_the_core_is_found_on_disk() -> None:
    """The walk sees the engine, the hot paths and what they stand on."""
    for name in ("quic_p2p.proto.engine", "quic_p2p.accel.cimpl.framing", "quic_p2p.proto.link"):
        assert name in CORE
    assert not any(name.startswith(DRIVER) for name in CORE)


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_module_does_no_io(module: str) -> None:
    assert _impure(CORE[module]) == KNOWN_IMPURE.get(module, set())


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_module_never_imports_the_driver(module: str) -> None:
    up = {m for m in _imports(CORE[module])[1] if m.startswith(DRIVER)}
    assert not up, f"{module} imports the driver ring: {sorted(up)}"


def test_known_impurities_are_core_modules() -> None:
    assert set(KNOWN_IMPURE) <= set(CORE)


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, time\nimport datetime\nfrom random import choice\nimport asyncio.tasks\n"
        "os.urandom(8)\ndatetime.datetime.now()\nopen('x')\npath.write_bytes(b'')\n"
    )
    assert _impure(sample) == {
        "import time",
        "import asyncio.tasks",
        "from random",
        "os.urandom()",
        "datetime.now()",
        "open()",
        ".write_bytes()",
    }


def test_relative_imports_are_resolved() -> None:
    _, ours = _imports(ROOT / "proto" / "engine.py")
    assert "quic_p2p.proto.relay" in ours and "quic_p2p.proto.link" in ours
    _, ours = _imports(ROOT / "aio" / "endpoint.py")
    assert "quic_p2p.proto" in ours  # an upward import would be seen the same way


def test_every_module_is_in_a_ring() -> None:
    """A module is in the core (walked above) or named as the driver here."""
    everything = {_module_name(p) for p in ROOT.rglob("*.py")}
    driver = {m for m in everything if m.startswith(DRIVER) or m == "quic_p2p"}
    assert everything - set(CORE) - driver == set(), "classify the new module"
