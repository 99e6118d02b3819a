"""The built wheel: what it ships, what it leaves out, and what it declares it needs."""

from __future__ import annotations

import ast
import email
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

#: Not copied into the build directory (caches, virtualenvs, earlier build output).
IGNORED = shutil.ignore_patterns(
    ".venv",
    ".git",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "__pycache__",
    "build",
    "dist",
    "*.egg-info",
    "*.sqlite3*",
    "*.pyc",
)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tree: other builds may run in the checkout, and files may change."""
    path = tmp_path_factory.mktemp("wheel") / "src"
    shutil.copytree(ROOT, path, ignore=IGNORED)
    return path


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    base = source.parent
    out = base / "dist"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("tasker_django-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(zf.read(meta))


def test_wheel_name_and_version(wheel: Path, metadata: email.message.Message) -> None:
    import tasker_django

    assert wheel.name == f"tasker_django-{tasker_django.__version__}-py3-none-any.whl"
    assert metadata["Name"] == "tasker-django"
    assert metadata["Version"] == tasker_django.__version__


def test_wheel_contains_migrations_typing_marker_and_subpackages(names: list[str]) -> None:
    assert "tasker_django/__init__.py" in names
    assert "tasker_django/migrations/__init__.py" in names
    assert "tasker_django/migrations/0001_initial.py" in names
    assert "tasker_django/py.typed" in names
    for package in ("definitions", "testing", "engine", "handlers", "services", "management"):
        assert f"tasker_django/{package}/__init__.py" in names, package
    assert "tasker_django/management/commands/__init__.py" in names
    assert "tasker_django/testing/pytest_plugin.py" in names
    assert "tasker_django/management/commands/tasker_worker.py" in names


def test_every_source_module_is_shipped(source: Path, names: list[str]) -> None:
    modules = {p.relative_to(source).as_posix() for p in (source / "tasker_django").rglob("*.py")}
    assert len(modules) > 20
    assert modules - set(names) == set()


def test_wheel_leaves_out_tests_and_the_example_project(names: list[str]) -> None:
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"tasker_django"}
    for name in names:
        assert not name.startswith(("tests/", "example_project/", "scripts/", "docs/")), name
        assert "__pycache__" not in name and not name.endswith((".pyc", ".sqlite3")), name


def test_pytest_plugin_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(f"tasker_django-{wheel.name.split('-')[1]}.dist-info/entry_points.txt")
    assert "[pytest11]" in text.decode()
    assert "tasker_django = tasker_django.testing.pytest_plugin" in text.decode()


def _third_party_imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {
        name
        for name in found
        if name not in sys.stdlib_module_names and name not in ("tasker_django", "__future__")
    }


def test_every_imported_distribution_is_declared(
    wheel: Path, metadata: email.message.Message
) -> None:
    from packaging.requirements import Requirement

    declared = {canonical(Requirement(r).name) for r in metadata.get_all("Requires-Dist") or []}
    dists = importlib.metadata.packages_distributions()
    missing: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if not name.endswith(".py"):
                continue
            for module in _third_party_imports(ast.parse(zf.read(name))):
                candidates = {canonical(d) for d in dists.get(module, [module])}
                if not candidates & declared:
                    missing[module] = name
    assert missing == {}, f"imported but not in Requires-Dist (core or an extra): {missing}"


def test_the_wheel_imports_and_sets_up_django(wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(unpacked)
    code = (
        "import django, tasker_django\n"
        "django.setup()\n"
        "from django.apps import apps\n"
        "import tasker_django.migrations, importlib\n"
        "importlib.import_module('tasker_django.migrations.0001_initial')\n"
        "print(apps.get_app_config('tasker_django').path)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(unpacked), str(ROOT)])
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env.pop("DATABASE_URL", None)
    env["TASKER_TEST_SQLITE"] = str(tmp_path / "unused.sqlite3")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip()).resolve() == (unpacked / "tasker_django").resolve()
