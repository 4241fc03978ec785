"""The packages are layered: a module imports from its own package or from a lower layer,
never from a higher one nor from another package of its own layer (so no loop between
packages can form). Every import counts, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Lowest first. Packages of one layer do not import each other.
LAYERS: dict[str, int] = {
    "core": 0,
    "backfills": 1,
    "migrations": 1,
    "monitoring": 2,
    "worker": 3,
    "bench": 4,
}


def imported_modules(source: str) -> list[str]:
    """The absolute module names a module's source imports (relative imports are left out)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def violations(package: str, imports: list[str]) -> list[str]:
    """The imports of a module of `package` that reach up a layer or across to a peer."""
    layer = LAYERS[package]
    bad = []
    for name in imports:
        target = name.split(".")[0]
        if target == package or target not in LAYERS:
            continue
        if LAYERS[target] >= layer:
            bad.append(name)
    return bad


def project_modules() -> list[tuple[str, Path]]:
    """(package, file) for every module of the layered packages."""
    return [(package, path) for package in LAYERS for path in sorted((REPO / package).rglob("*.py"))]


def test_every_layered_package_exists() -> None:
    assert all((REPO / package / "__init__.py").is_file() for package in LAYERS)


@pytest.mark.parametrize(("package", "path"), project_modules(),
                         ids=lambda value: str(value.relative_to(REPO)) if isinstance(value, Path) else value)
def test_no_module_imports_from_a_higher_layer(package: str, path: Path) -> None:
    assert violations(package, imported_modules(path.read_text())) == []


def test_the_check_catches_an_import_up_a_layer_or_across() -> None:
    source = "import os\nfrom worker.app import create_app\ndef f():\n    import monitoring.hook\n"
    assert violations("backfills", imported_modules(source)) == ["worker.app", "monitoring.hook"]
    assert violations("backfills", ["migrations.files"]) == ["migrations.files"]
    assert violations("worker", ["core.settings", "backfills.runs", "worker.cli", "redis"]) == []
