"""The machine a benchmark ran on, and how busy it was: printed with every figure."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _mosquitto_version() -> str:
    from punchgate.gateway.mosquitto import find_mosquitto

    try:
        out = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True, timeout=10).stdout
    except Exception:
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.replace("mosquitto version", "").strip() or "unknown"


def load_average() -> float:
    return os.getloadavg()[0]


def describe() -> dict[str, str]:
    """CPU model, cores, RAM, Python, OS, mosquitto and the date, as short strings."""
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count() or 0),
        "ram": f"{_ram_gib():.1f} GiB",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "mosquitto": _mosquitto_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def one_line(machine: dict[str, str]) -> str:
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, Python {machine['python']}, "
        f"{machine['os']}, mosquitto {machine['mosquitto']}, {machine['date']}"
    )
