"""The code style CI keeps: ``ruff check`` and ``ruff format --check`` over the repository (config: pyproject.toml)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e .[test])")
    return [found]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["check", "format"])
def test_ruff_is_clean(args):
    result = subprocess.run([*ruff(), *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


PY310_SOURCES = ["zoedepth_ros", "launch", "test", "scripts", "setup.py"]


def test_python_310_is_enough():
    """Humble runs on Ubuntu 22.04's Python 3.10: no newer syntax, stdlib module or member anywhere we ship or test."""
    exe = Path(sys.executable).with_name("vermin")
    if not exe.is_file():
        pytest.skip("vermin is not installed (pip install -e .[test])")
    scripts = [str(p.relative_to(REPO)) for p in (REPO / "scripts").iterdir() if p.suffix == ".py" or p.stem == p.name]
    paths = [p for p in PY310_SOURCES if p != "scripts"] + sorted(s for s in scripts if is_python(REPO / s))
    result = subprocess.run(
        [str(exe), "-t=3.10-", "--no-tips", "--violations", "--eval-annotations", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def is_python(path: Path) -> bool:
    if path.suffix == ".py":
        return True
    try:
        return path.read_text(errors="replace").startswith(("#!/usr/bin/env python", "#!/usr/bin/python"))
    except OSError:
        return False


SKIP_CALLS = {("pytest", "importorskip"), ("pytest", "skip")}


def module_level_skips(tree: ast.Module) -> list[int]:
    """Lines of ``pytest.importorskip`` / ``pytest.skip`` calls that run when the module is imported.

    Under launch_testing's pytest plugin (every ROS distro has it) such a skip skips the whole directory, not the
    module: guard the imports and mark the tests with ``skipif`` instead.
    """
    lines = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue  # runs when called, not at import
        if isinstance(node, ast.ClassDef):
            todo.extend(node.decorator_list + node.bases)
            todo.extend(s for s in node.body if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef))
            continue
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in SKIP_CALLS:
                lines.append(node.lineno)
            if isinstance(f, ast.Name) and f.id in {"importorskip", "skip"}:
                lines.append(node.lineno)
        todo.extend(ast.iter_child_nodes(node))
    return sorted(lines)


def test_no_module_level_skip_in_the_tests():
    found = {}
    for path in sorted((REPO / "test").rglob("*.py")):
        lines = module_level_skips(ast.parse(path.read_text(), str(path)))
        if lines:
            found[str(path.relative_to(REPO))] = lines
    assert not found, f"module-level skips (they skip the whole run under launch_testing's plugin): {found}"


def test_the_skip_check_finds_module_level_skips():
    bad = ast.parse(
        "import pytest\nrosbags = pytest.importorskip('rosbags')\n"
        "try:\n    import rclpy\nexcept ImportError:\n    pytest.skip('no', allow_module_level=True)\n"
        "class T:\n    x = pytest.importorskip('y')\n    def test(self):\n        pytest.skip('fine')\n"
        "def test_f():\n    pytest.importorskip('fine')\n"
    )
    assert module_level_skips(bad) == [2, 6, 8]
