"""The installed distribution's metadata, and the public API's types as a
user's mypy sees them."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import quic_p2p

ROOT = Path(__file__).resolve().parent.parent


def test_license_files_are_shipped_and_named_in_the_metadata() -> None:
    meta = importlib.metadata.metadata("quic-p2p")
    assert meta["License-Expression"] == "MIT OR BSD-3-Clause"
    assert sorted(meta.get_all("License-File") or []) == ["LICENSE-BSD-3-Clause", "LICENSE-MIT"]
    for name in ("LICENSE-MIT", "LICENSE-BSD-3-Clause"):
        assert "quic-p2p developers" in (ROOT / name).read_text()


def test_classifiers_name_the_supported_pythons_and_os() -> None:
    classifiers = importlib.metadata.metadata("quic-p2p").get_all("Classifier") or []
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Operating System :: POSIX :: Linux" in classifiers


def test_sdist_manifest_ships_the_licenses() -> None:
    assert "LICENSE-*" in (ROOT / "MANIFEST.in").read_text()


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_config_accepts_a_list_of_contacts_under_mypy(tmp_path: Path) -> None:
    snippet = tmp_path / "user_code.py"
    snippet.write_text(
        "from quic_p2p import Config, NodeInfo\n"
        "contacts: list[NodeInfo] = [NodeInfo(('127.0.0.1', 5000))]\n"
        "config = Config(hard_coded_contacts=contacts, ca_certs_der=[b'der'])\n"
        "stored: tuple[NodeInfo, ...] = tuple(config.hard_coded_contacts)\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,  # quic_p2p resolves to this checkout, as in the other tests
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_config_stores_any_iterable_of_contacts_as_a_tuple() -> None:
    from quic_p2p import Config, NodeInfo

    contacts = [NodeInfo(("127.0.0.1", 5000 + i)) for i in range(3)]
    config = Config(hard_coded_contacts=contacts)
    assert config.hard_coded_contacts == tuple(contacts)
    assert isinstance(config.hard_coded_contacts, tuple)


def test_every_package_of_the_source_is_installed() -> None:
    """Each package under the source tree's quic_p2p/ is in the quic_p2p being
    tested (against an installed wheel: what the wheel shipped)."""
    source = Path(__file__).resolve().parents[1] / "quic_p2p"
    installed = Path(quic_p2p.__file__).resolve().parent
    packages = [p.parent.relative_to(source) for p in source.rglob("__init__.py")]
    assert Path("proto") in packages and Path("aio") in packages
    missing = [str(p) for p in packages if not (installed / p / "__init__.py").exists()]
    assert not missing, f"packages left out of the build: {missing}"
