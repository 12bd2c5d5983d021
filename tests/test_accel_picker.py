"""The picker, the twin contract (same names, same signatures), the C constants
matching the Python ones, and what an installed package must contain."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

import quic_p2p
from quic_p2p import accel
from quic_p2p.accel import types

from netutil import python_argv, python_env

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str, **env: str) -> str:
    full_env = {k: v for k, v in python_env().items() if not k.startswith("QUIC_P2P_")}
    full_env.update(env)
    out = subprocess.run(
        python_argv("-c", code), env=full_env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_env_var_forces_the_twin() -> None:
    code = "import quic_p2p.accel as a; print(a.IMPLEMENTATION, a.FrameDecoder.__module__)"
    assert _run(code, QUIC_P2P_NO_EXTENSIONS="1") == "py quic_p2p.accel.pyimpl.framing"


def test_default_is_c_when_built(c_impl: ModuleType) -> None:
    assert _run("import quic_p2p.accel as a; print(a.IMPLEMENTATION)") == "c"


def test_subprocesses_import_the_package_this_run_imported() -> None:
    """tests/netutil.py's python_argv/python_env, used by every test that starts
    Python, from the clone's root: there ``python -c`` alone imports the source
    tree (no compiled module) rather than the installed package under test."""
    out = subprocess.run(
        python_argv("-c", "import quic_p2p; print(quic_p2p.__file__)"),
        cwd=ROOT,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == Path(quic_p2p.__file__).resolve()


def test_running_from_a_source_tree_without_the_module_says_so() -> None:
    """What a newcomer gets from ``python -m quic_p2p selfcheck`` in a fresh
    clone's root (plain ``python``, no -P): the twin, and a reason that names
    the source tree rather than only "No module named ..."."""
    if list((ROOT / "quic_p2p" / "accel").glob("_native*.so")):
        pytest.skip("this source tree has a built module (ci/dev-build)")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QUIC_P2P_", "PYTHONPATH", "PYTHONSAFEPATH"))
    }
    out = subprocess.run(
        [sys.executable, "-m", "quic_p2p", "selfcheck"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr  # the twin is supported
    assert "active implementation: py" in out.stdout
    assert f"imported from the source tree {ROOT}" in out.stdout, out.stdout
    assert "Traceback" not in out.stderr


def test_implementations_export_the_same_names_and_signatures(c_impl: ModuleType) -> None:
    py = accel.IMPLEMENTATIONS["py"]
    assert sorted(c_impl.__all__) == sorted(py.__all__)
    for name in py.__all__:
        a, b = getattr(py, name), getattr(c_impl, name)
        if name == "NAME":
            continue
        if inspect.isclass(a):
            public = sorted(n for n in vars(a) if not n.startswith("_") or n in ("__init__",))
            assert public == sorted(
                n for n in vars(b) if not n.startswith("_") or n in ("__init__",)
            ), name
            for member in public:
                ma, mb = getattr(a, member), getattr(b, member)
                if callable(ma):
                    assert inspect.signature(ma) == inspect.signature(mb), f"{name}.{member}"
        else:
            assert inspect.signature(a) == inspect.signature(b), name


@pytest.mark.c_extension
def test_c_constants_match_python(c_impl: ModuleType) -> None:
    from quic_p2p.accel._native import lib  # type: ignore[import-not-found]

    assert lib.QP2P_FRAME_VERSION == types.FRAME_VERSION
    assert lib.QP2P_FRAME_HEADER_SIZE == types.FRAME_HEADER_SIZE
    assert lib.QP2P_KIND_MAX == types.KIND_MAX
    for kind in types.FrameKind:
        assert getattr(lib, f"QP2P_KIND_{kind.name}") == kind
    for code in types.FrameErrorCode:
        assert getattr(lib, f"QP2P_E_FRAME_{code.name}") == code
    for dcode in types.DatagramErrorCode:
        assert getattr(lib, f"QP2P_E_DGRAM_{dcode.name}") == dcode
    for tcode in types.TokenErrorCode:
        assert getattr(lib, f"QP2P_E_TOKEN_{tcode.name}") == tcode
    for pt in types.PacketType:
        assert getattr(lib, f"QP2P_PT_{pt.name}") == pt
    assert lib.QP2P_QUIC_V1 == types.QUIC_V1
    assert lib.QP2P_MAX_CID_LEN == types.MAX_CID_LEN
    assert lib.QP2P_SHA256_SIZE == types.SHA256_SIZE
    assert lib.QP2P_TOKEN_VERSION == types.TOKEN_VERSION
    assert lib.QP2P_TOKEN_FIXED == types.TOKEN_FIXED
    assert lib.QP2P_TOKEN_MAX == types.TOKEN_MAX
    assert lib.QP2P_TOKEN_MAX_ADDR == types.TOKEN_MAX_ADDR


@pytest.mark.skipif(
    not os.environ.get("QUIC_P2P_EXPECT_INSTALLED"), reason="only when testing an installed wheel"
)
def test_running_from_the_installed_package() -> None:
    pkg = Path(quic_p2p.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert pkg.is_relative_to(site), f"quic_p2p imported from {pkg}, not {site}"
    assert (pkg / "py.typed").is_file()
    assert list((pkg / "accel").glob("_native*.so")), "wheel lacks the compiled module"
