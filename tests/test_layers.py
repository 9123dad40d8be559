"""Data flows one way: analysis and slurm use experiments, which uses algos and envs; validation (config
building, one-line user errors) sits below them all and uses none of them. Read from the source's
imports (function-level ones included), so a shortcut that reaches up a layer fails here."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("validation", "envs", "algos", "experiments", "analysis", "slurm")
MAY_USE = {
    "validation": set(),
    "envs": {"validation"},
    "algos": {"envs", "validation"},
    "experiments": {"algos", "envs", "validation"},
    "analysis": {"experiments", "algos", "envs", "validation"},
    "slurm": {"experiments", "algos", "envs", "validation"},
}


def imports_of(package: str) -> dict[str, set[str]]:
    """The suite's packages each module of ``package`` imports: {other package: {file, ...}}."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_uses_only_the_layers_below_it(package):
    wrong = {other: files for other, files in imports_of(package).items() if other not in MAY_USE[package]}
    assert not wrong, f"{package} reaches up into {wrong}"


def test_the_check_sees_imports():
    assert imports_of("experiments").keys() >= {"algos", "envs", "validation"}  # the parser finds real imports
