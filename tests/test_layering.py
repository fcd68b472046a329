"""The packages' import directions (DESIGN.md, "Layout"): data flows models -> tracer -> plots -> app.

tracer is the library: it imports neither Streamlit, the app nor models (the zoo of shipped and
random models), so it works on any model in a notebook or a user's tests. Only the command line
(tracer/__main__.py) joins tracer and models. Every import counts, including one inside a
function: a function-local import hides a cycle, it does not remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every import in a file, wherever the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", files("tracer"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_tracer_imports_no_app_and_no_models(path):
    imports = imported_packages(path)
    assert not imports & {"streamlit", "stepwise_app"}, f"{path.name} imports the app"
    if path.name != "__main__.py":
        assert "models" not in imports, f"{path.name} imports models: only the command line joins them"


@pytest.mark.parametrize("path", files("models"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_models_import_no_app(path):
    assert not imported_packages(path) & {"streamlit", "stepwise_app"}


def test_the_checker_sees_a_function_local_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from models import scenarios\n    import streamlit.runtime\n")
    assert imported_packages(sample) == {"models", "streamlit"}
