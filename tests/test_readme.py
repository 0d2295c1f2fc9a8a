"""The README tells the truth: its commands and options exist, its Python uses public API only.

Commands are read from ``bash`` blocks, ``$ rcm-dask ...`` lines of ``text`` blocks and inline
code spans; each is checked against click's own command objects (no subprocess). Python
blocks are parsed, and every ``rcm_dask`` name they use must be in ``rcm_dask.__all__``, every
attribute they read off a result must exist on its documented type, and every public name
must be documented.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import rcm_dask
from rcm_dask.cli import main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```", re.DOTALL | re.MULTILINE)


def _blocks(lang: str) -> list[str]:
    return [m.group(3) for m in FENCE.finditer(README) if m.group(2) == lang]


def _shell_lines() -> list[str]:
    """Every command line the README shows: in bash blocks (``&&`` chains split), after
    ``$ `` in text blocks, and in inline code spans outside blocks."""
    lines: list[str] = []
    for block in _blocks("bash"):
        joined = re.sub(r"\n\s+(?=\[)", " ", block)  # synopses continue on indented lines
        for line in joined.splitlines():
            lines.extend(part.strip() for part in line.split("&&"))
    for block in _blocks("text"):
        lines.extend(m.group(1) for m in re.finditer(r"^\s*\$ (.+)$", block, re.MULTILINE))
    prose = FENCE.sub("", README)
    lines.extend(re.findall(r"`(rcm-dask [^`]+)`", prose))
    return [line for line in lines if line.startswith("rcm-dask ")]


def _argv(line: str) -> list[str]:
    """A command line as argv; synopsis brackets and alternatives become plain words."""
    return shlex.split(re.sub(r"[\[\]|]", " ", line.replace("…", "")))


COMMANDS = _shell_lines()


def test_the_readme_shows_every_command() -> None:
    shown = {_argv(line)[1] for line in COMMANDS}
    assert shown >= {"index", "search", "status"}
    assert "rcm-dask index PATH --dry-run" in README


@pytest.mark.parametrize("line", COMMANDS, ids=lambda line: line[:60])
def test_every_readme_command_and_option_exists_and_runs(line: str) -> None:
    argv = _argv(line)
    sub = argv[1]
    assert sub in main.commands, f"README shows `rcm-dask {sub}`, which does not exist"
    command = main.commands[sub]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    options |= {"--help", "-h"}
    for word in argv[2:]:
        if word.startswith("-") and len(word) > 1 and not word[1:].replace(".", "").isdigit():
            assert word.split("=")[0] in options, f"README shows {word} for `rcm-dask {sub}`"
    result = CliRunner().invoke(main, [sub, "--help"])
    assert result.exit_code == 0, result.output


def test_every_cli_option_is_in_the_readme_synopsis_or_text() -> None:
    """The other direction for the options people reach for: the synopsis lists them."""
    synopsis = " ".join(_blocks("bash")[2:])
    for name in ("index", "search", "status"):
        for param in main.commands[name].params:
            if isinstance(param, click.Option) and param.name in {
                "dry_run",
                "quiet",
                "as_json",
                "index_dir",
                "force",
                "mode",
            }:
                assert param.opts[0] in synopsis, f"`rcm-dask {name} {param.opts[0]}` undocumented"


# --------------------------------------------------------------------------- Python


PYTHON = _blocks("python")

RETURNS = {
    "index": "IndexStats",
    "plan_dry_run": "DryRun",
    "open_index": "Index",
    "search": "Hit",  # a list of them: bound by a for loop
}
"""What each public function returns (the element type for lists)."""


def _attributes(type_name: str) -> set[str]:
    cls = getattr(rcm_dask, type_name)
    names = set(dir(cls))
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return names


class _Uses(ast.NodeVisitor):
    """Public names a block uses, and attributes read off variables of known types."""

    def __init__(self) -> None:
        self.public: list[str] = []
        self.private_imports: list[str] = []
        self.typed: dict[str, str] = {}
        self.reads: list[tuple[str, str]] = []  # (type, attribute)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "rcm_dask":
            self.public.extend(a.name for a in node.names)
        elif node.module and node.module.startswith("rcm_dask."):
            self.private_imports.append(node.module)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.startswith("rcm_dask."):
                self.private_imports.append(alias.name)

    def _returned(self, value: ast.expr) -> str | None:
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and isinstance(value.func.value, ast.Name)
            and value.func.value.id == "rcm_dask"
        ):
            return RETURNS.get(value.func.attr)
        return None

    def visit_Assign(self, node: ast.Assign) -> None:
        kind = self._returned(node.value)
        for target in node.targets:
            if kind and isinstance(target, ast.Name):
                self.typed[target.id] = kind
        self.generic_visit(node)

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            kind = self._returned(item.context_expr)
            if kind and isinstance(item.optional_vars, ast.Name):
                self.typed[item.optional_vars.id] = kind
        self.generic_visit(node)

    def visit_For(self, node: ast.For) -> None:
        kind = self._returned(node.iter)
        if kind and isinstance(node.target, ast.Name):
            self.typed[node.target.id] = kind
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name):
            if node.value.id == "rcm_dask":
                self.public.append(node.attr)
            elif node.value.id in self.typed:
                self.reads.append((self.typed[node.value.id], node.attr))
        self.generic_visit(node)


def _uses(block: str) -> _Uses:
    uses = _Uses()
    uses.visit(ast.parse(block))
    return uses


def test_the_readme_has_python_examples() -> None:
    assert PYTHON, "the README shows no Python"
    every = _Uses()
    for block in PYTHON:
        every.visit(ast.parse(block))
    assert {"index", "search", "open_index", "plan_dry_run"} <= set(every.public)


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.strip().splitlines()[1][:40])
def test_readme_python_names_only_public_api(block: str) -> None:
    uses = _uses(block)
    assert not uses.private_imports, f"README imports internals: {uses.private_imports}"
    for name in uses.public:
        assert name in rcm_dask.__all__, f"README uses rcm_dask.{name}, not in __all__"
    for type_name, attr in uses.reads:
        assert attr in _attributes(type_name), f"README reads {type_name}.{attr}, which is not one"


def test_every_public_name_is_documented_in_the_readme() -> None:
    for name in rcm_dask.__all__:
        assert f"`{name}" in README, f"rcm_dask.{name} is public but the README never names it"


def test_public_api_is_sorted_and_resolves() -> None:
    assert rcm_dask.__all__ == sorted(rcm_dask.__all__)
    assert len(set(rcm_dask.__all__)) == len(rcm_dask.__all__)
    for name in rcm_dask.__all__:
        assert getattr(rcm_dask, name) is not None
    assert sorted(dir(rcm_dask)) == sorted(rcm_dask.__all__)


def test_readme_scripts_exist_and_the_corpus_script_finds_rust_src() -> None:
    """The quick start runs a project script to get its corpus: it is in the clone, and
    it prints a rust-src root (installing the package when missing)."""
    repo = Path(__file__).resolve().parents[1]
    scripts = set(re.findall(r"\bsh (\S+\.sh)\b", "\n".join(_blocks("bash"))))
    assert "benchmarks/rust_src.sh" in scripts
    assert all((repo / s).is_file() for s in scripts), scripts
    out = subprocess.run(
        ["sh", str(repo / "benchmarks" / "rust_src.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert (Path(out.stdout.strip().splitlines()[-1]) / "library" / "alloc").is_dir()
