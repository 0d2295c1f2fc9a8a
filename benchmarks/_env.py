"""What a benchmark ran with and on: the locked environment, the CPU, its cores, the GPU.

Every ``benchmarks/*/run.py`` puts :func:`environment_summary` in the figures it saves and
:func:`environment_lines` at the head of the report it prints or writes, so that each
``REPORT.md`` names the exact package set (the sha256 of ``requirements.lock``, and any
installed package that differs from it) and the hardware its figures come from.

Usage from a benchmark script (``benchmarks/`` on ``sys.path``)::

    from _env import environment_lines, environment_summary

    figures["environment"] = environment_summary()
    print("\\n".join(environment_lines(figures["environment"])))
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
"""The lock of every pip-installed package but torch (see its header and README)."""


def rust_src() -> Path:
    """The rust-src root (``library/``, ``compiler/``...), installed by
    ``benchmarks/rust_src.sh`` when missing: every benchmark's way to find the corpus."""
    script = Path(__file__).resolve().parent / "rust_src.sh"
    out = subprocess.run(["sh", str(script)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_model() -> str:
    """The GPUs torch can use, by name; a GPU torch cannot use says so; else ``"none"``."""
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return ", ".join(names) + f" (CUDA {torch.version.cuda})"
    except ImportError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        ).stdout.strip()
        if out:
            return ", ".join(out.splitlines()) + " (not used: this torch has no CUDA)"
    return "none"


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """``{normalised name: version}`` of every package pinned in ``lock``."""
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock.read_text(), re.MULTILINE)
    return {_norm(name): version for name, version in pins}


def lock_drift(lock: Path = LOCK) -> list[str]:
    """Locked packages that are missing here or installed at another version."""
    out = []
    for name, version in sorted(locked_versions(lock).items()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(f"{name} missing (locked {version})")
            continue
        if have != version:
            out.append(f"{name} {have} (locked {version})")
    return out


def _norm(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(dist: str) -> str:
    """An installed distribution's version, or ``"-"``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def environment_summary(lock: Path = LOCK) -> dict[str, Any]:
    """What this benchmark runs with and on, as JSON-ready values.

    Parameters
    ----------
    lock
        The lock file to fingerprint; the repository's ``requirements.lock`` by default.

    Returns
    -------
    dict
        ``lock_sha256`` (``None`` without a lock file), ``lock_packages``, ``lock_drift``
        (installed packages that differ from the lock; empty when the environment is the
        locked one), ``torch`` (not locked: which build ran), ``python``, ``platform``,
        ``cpu``, ``cores`` (usable by this process), ``cpu_count`` and ``gpu``
        (``"none"`` without one).

    Examples
    --------
    >>> env = environment_summary()
    >>> sorted(env) == sorted(["lock_sha256", "lock_packages", "lock_drift", "torch",
    ...     "python", "platform", "cpu", "cores", "cpu_count", "gpu"])
    True
    """
    has_lock = lock.is_file()
    return {
        "lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest() if has_lock else None,
        "lock_packages": len(locked_versions(lock)) if has_lock else 0,
        "lock_drift": lock_drift(lock) if has_lock else [],
        "torch": _version("torch"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_model(),
    }


def environment_lines(summary: dict[str, Any] | None = None) -> list[str]:
    """The environment as Markdown bullet lines for the head of a ``REPORT.md``.

    Parameters
    ----------
    summary
        What :func:`environment_summary` returned (computed now when omitted).

    Returns
    -------
    list of str
        Two bullets: the packages (lock hash, drift, torch) and the machine.

    Examples
    --------
    >>> lines = environment_lines()
    >>> lines[0].startswith("- **Packages**") and lines[1].startswith("- **Machine**")
    True
    """
    env = summary if summary is not None else environment_summary()
    if env["lock_sha256"] is None:
        packages = "no requirements.lock"
    else:
        drift = env["lock_drift"]
        packages = f"requirements.lock sha256 `{env['lock_sha256']}`, " + (
            f"all {env['lock_packages']} locked packages installed as locked"
            if not drift
            else f"{len(drift)} of {env['lock_packages']} differ: {'; '.join(drift)}"
        )
    return [
        f"- **Packages**: {packages}; torch {env['torch']} (not locked); "
        f"Python {env['python']}.",
        f"- **Machine**: {env['cpu']}, {env['cores']} usable cores (of {env['cpu_count']}), "
        f"GPU: {env['gpu']}; {env['platform']}.",
    ]


if __name__ == "__main__":
    print("\n".join(environment_lines()))
