"""The set-up stays true: environment.yml agrees with pyproject.toml, README commands exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml
from click.testing import CliRunner

from rcm_dask.cli import main

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_matches_pyproject() -> None:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    # the environment is for tests and benchmark runs: the core, the test and bench extras
    wanted = {_norm(r) for r in project["dependencies"] + extras["test"] + extras["bench"]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {_norm(r) for r in pip_section if not r.startswith("-e")}
    assert have == wanted, f"missing in environment.yml: {wanted - have}; extra: {have - wanted}"
    assert "-e ." in pip_section
    assert any(str(d).startswith("python=") for d in env["dependencies"])


def test_torch_is_never_pinned_to_pull_cuda() -> None:
    # a range that the local CPU wheel satisfies: pip keeps whatever torch is installed
    torch_req = [r for r in _pyproject()["project"]["dependencies"] if r.startswith("torch")]
    assert torch_req == ["torch>=2.1"]


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


def _readme_invocations() -> list[list[str]]:
    calls = []
    for block in _readme_blocks():
        for line in block.splitlines():
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("rcm-dask "):
                    # placeholders like [--limit N] are usage synopses: drop the brackets
                    calls.append(
                        shlex.split(part.replace("[", " ").replace("]", " ").replace("|", " "))
                    )
    return calls


@pytest.mark.parametrize("argv", _readme_invocations(), ids=lambda a: " ".join(a[:3]))
def test_every_readme_command_and_option_exists(argv: list[str]) -> None:
    sub = argv[1]
    assert sub in main.commands, f"README shows `rcm-dask {sub}` which does not exist"
    options = {o for p in main.commands[sub].params for o in getattr(p, "opts", [])}
    for word in argv[2:]:
        if word.startswith("--"):
            assert word in options, f"README shows {word} for `rcm-dask {sub}`"
    result = CliRunner().invoke(main, [sub, "--help"])
    assert result.exit_code == 0


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
