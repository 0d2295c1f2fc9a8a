"""The set-up stays true: requirements.lock and environment.yml agree with pyproject.toml,
the README's setup commands are the ones CI runs (its CLI commands: test_readme.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


LOCK = REPO / "requirements.lock"


@dataclass
class _Locked:
    """One package of requirements.lock."""

    version: str
    hashes: list[str]
    via: list[str]


def _lock() -> dict[str, _Locked]:
    """requirements.lock by normalised name: version, sha256 hashes, what requires it."""
    out: dict[str, _Locked] = {}
    current: _Locked | None = None
    in_via = False
    for line in LOCK.read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = out[canonicalize_name(m[1])] = _Locked(m[2], [], [])
            in_via = False
        elif current is not None and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current.hashes.append(h[1])
        elif current is not None and (v := re.match(r"^\s+# via ?(.*)$", line)):
            in_via = not v[1]
            if v[1]:
                current.via.append(v[1].strip())
        elif current is not None and in_via and (v := re.match(r"^\s+#\s+(\S.*)$", line)):
            current.via.append(v[1].strip())
        elif line.strip() and not line.lstrip().startswith("#"):
            raise AssertionError(f"requirements.lock: unexpected line {line!r}")
        else:
            in_via = in_via and line.strip().startswith("#")
    return out


def _wanted() -> list[Requirement]:
    """What the benchmark environment needs: the core dependencies, the test and bench extras."""
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["test"] + extras["bench"]]


def test_environment_yml_is_conda_python_and_pip_then_torch() -> None:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda = [d for d in env["dependencies"] if not isinstance(d, dict)]
    assert conda == ["python=3.11", "pip"]
    # the lock cannot ride in the pip section (one pip call: hashes vs torch and -e .);
    # torch, pinned by version, is all it holds, at a version pyproject accepts
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["torch==2.13.0"]
    torch = next(r for r in _wanted() if r.name == "torch")
    assert torch.specifier.contains("2.13.0")
    text = (REPO / "environment.yml").read_text()
    assert "pip install --require-hashes -r requirements.lock" in text
    assert "pip install --no-deps -e ." in text


def test_lock_holds_every_dependency_at_a_version_pyproject_accepts() -> None:
    lock = _lock()
    for req in _wanted():
        name = canonicalize_name(req.name)
        if name == "torch":
            continue  # not locked: see requirements.lock's header
        assert name in lock, f"{req} is not in requirements.lock: run `sh lock.sh`"
        assert req.specifier.contains(lock[name].version, prereleases=True), (
            f"requirements.lock has {name}=={lock[name].version}, pyproject wants {req}: "
            "run `sh lock.sh`"
        )
        assert "rcm-dask (pyproject.toml)" in lock[name].via, name


def test_lock_names_nothing_at_top_level_that_pyproject_does_not_require() -> None:
    wanted = {canonicalize_name(r.name) for r in _wanted()}
    top = {name for name, p in _lock().items() if "rcm-dask (pyproject.toml)" in p.via}
    assert top <= wanted, f"locked as direct but not in pyproject.toml: {top - wanted}"


def test_every_locked_package_is_hashed_and_required_by_something() -> None:
    lock = _lock()
    assert len(lock) > 50
    for name, p in lock.items():
        assert p.hashes, f"{name} has no --hash in requirements.lock"
        assert p.via, f"nothing requires {name}"


def test_lock_leaves_torch_and_cuda_out_and_says_how_it_is_made() -> None:
    lock = _lock()
    assert "torch" not in lock
    assert not [n for n in lock if n.startswith(("nvidia-", "triton"))], "CUDA packages locked"
    text = LOCK.read_text()
    uv = re.search(r"^UV_VERSION=(\S+)$", (REPO / "lock.sh").read_text(), flags=re.MULTILINE)
    assert uv, "lock.sh pins uv"
    assert f"Made by uv {uv[1]}" in text and "sh lock.sh" in text
    assert "--no-emit-package torch" in (REPO / "lock.sh").read_text()


def _readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_the_two_setup_commands_and_ci_runs_the_second() -> None:
    blocks = _readme_blocks()
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "rcm-dask index" in main_job and "rcm-dask search" in main_job
    assert "pip install torch==2.13.0" in main_job
    assert "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run exactly the README's test command"


def test_python_dash_m_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rcm_dask", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "index" in out.stdout and "search" in out.stdout


def test_public_api_is_explicit_and_sorted() -> None:
    import rcm_dask

    assert rcm_dask.__all__ == sorted(rcm_dask.__all__)
    for name in rcm_dask.__all__:
        assert getattr(rcm_dask, name) is not None
    assert callable(rcm_dask.search) and callable(rcm_dask.index)
