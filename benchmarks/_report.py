"""Write one benchmark's results into its own section of docs/benchmarks.md.

Each benchmark script owns the text between `<!-- BEGIN name -->` and `<!-- END name -->`, so
scripts can be re-run independently without clobbering each other's results.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import os

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery section below was written by the script it names; re-run that command to reproduce it.\n"


def machine_line() -> str:
    """Say which machine produced the numbers: results are only comparable on the same one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}."


def write_section(name: str, markdown: str) -> None:
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"<!-- BEGIN {name} -->\n{markdown.rstrip()}\n<!-- END {name} -->"
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
