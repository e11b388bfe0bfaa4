"""The package's layers point down (docs/architecture.md): the import-linter contracts of
pyproject.toml hold, and no module hides an import inside a function to dodge a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gateway"


def test_the_layer_contracts_hold() -> None:
    # In a process of its own: import-linter configures logging, which would silence the
    # gateway's loggers for the tests that run after it. It reads pyproject.toml from the cwd.
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command as c; c()",
            "--no-cache",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "BROKEN" not in run.stdout
    assert run.stdout.count("KEPT") >= 7


def _function_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["." * node.level]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith(("gateway", ".")):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    return found


def test_no_module_imports_the_gateway_inside_a_function() -> None:
    hidden = [found for path in sorted(PACKAGE.rglob("*.py")) for found in _function_imports(path)]
    assert hidden == []
