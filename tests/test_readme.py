"""The README's Python examples run as written and print what the README says.

Each ``print(...)`` line in a block ends in a comment that is what it prints
(``<port>`` standing for a port number); the block's output must be those
lines, in order.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from netutil import python_argv, python_env

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def expected_output(code: str) -> list[str]:
    """A regex per printed line: each print line's trailing comment."""
    out = []
    for line in code.splitlines():
        if not line.lstrip().startswith("print("):
            continue
        said = re.search(r"\)\s+#\s*(.+)$", line)
        assert said, f"README print without the output it gives in a comment: {line.strip()}"
        out.append(re.escape(said.group(1).strip()).replace(re.escape("<port>"), r"\d+"))
    return out


def test_every_readme_block_says_what_it_prints() -> None:
    assert BLOCKS and all(expected_output(code) for code in BLOCKS)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code: str) -> None:
    out = subprocess.run(
        python_argv("-c", code), capture_output=True, text=True, timeout=60, env=python_env()
    )
    assert out.returncode == 0, out.stderr
    printed = out.stdout.splitlines()
    wanted = expected_output(code)
    assert len(printed) == len(wanted), (printed, wanted)
    for line, pattern in zip(printed, wanted, strict=True):
        assert re.fullmatch(pattern, line), f"printed {line!r}, README says {pattern!r}"
