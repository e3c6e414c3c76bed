"""The machine a run was measured on: cores, memory, kernel, Pythons, package versions."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.procs import PEERS_PYTHON

PROJECT_PACKAGES = ("replkit", "aiohttp", "aiohttp-sse", "multidict", "yarl", "matplotlib")
PEER_PACKAGES = (
    "aiohttp",
    "aiohttp-sse",
    "sse-starlette",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "fastapi",
    "pydantic",
    "aiohttp-devtools",
    "watchfiles",
)
_VERSIONS = (
    "import importlib.metadata as m, json, sys\n"
    "def v(n):\n"
    "    try:\n        return m.version(n)\n"
    "    except m.PackageNotFoundError:\n        return None\n"
    "print(json.dumps({'python': sys.version.split()[0], "
    "'packages': {n: v(n) for n in sys.argv[1:]}}))"
)


def describe() -> dict[str, object]:
    """What the figures were measured on, as JSON-ready data."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_mem_total_kib() / 1024**2, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PROJECT_PACKAGES},
        "peers": _peer_versions(),
        "wrk": _wrk_version(),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _peer_versions() -> dict[str, object]:
    try:
        out = subprocess.run(
            [PEERS_PYTHON, "-c", _VERSIONS, *PEER_PACKAGES],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"python": None, "packages": {}}
    return dict(json.loads(out))


def _wrk_version() -> str | None:
    binary = shutil.which("wrk")
    if binary is None:
        return None
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[1] if out.startswith("wrk ") else None


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0
