"""Every exception the project defines sits in its package's ``_exceptions.py`` tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

PACKAGES = ("models", "worker", "service")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            names.append(info.name)
    return names


@pytest.mark.parametrize("module_name", _modules())
def test_exceptions_are_defined_in_the_packages_exceptions_module(module_name: str) -> None:
    module = importlib.import_module(module_name)
    stray = [
        name
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module_name
        and not module_name.endswith("._exceptions")
    ]
    assert stray == [], f"{module_name} defines {stray}; move them to its _exceptions.py"


def test_the_trees_are_rooted_in_atcon_error() -> None:
    from models._exceptions import AtconError
    from service import _exceptions as service_errors
    from worker import _exceptions as worker_errors

    for module in (worker_errors, service_errors):
        for name in module.__all__:
            value = getattr(module, name)
            if name == "BodyTooLargeError":  # an HTTPException, raised before routing
                continue
            assert issubclass(value, AtconError), name


def test_the_service_imports_the_workers_exceptions_by_their_public_names() -> None:
    """``service`` imports ``from worker import NoModelError``, never from
    ``worker._exceptions``: the private module can move without touching the service."""
    import ast
    from pathlib import Path

    import service
    import worker

    private = []
    for path in sorted(Path(service.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "worker._exceptions":
                private.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.ImportFrom) and node.module == "worker":
                private += [
                    f"{path.name}:{node.lineno}" for a in node.names if a.name == "_exceptions"
                ]
    assert private == [], f"import these from worker instead: {private}"
    from worker import _exceptions as tree

    assert set(worker.__all__) == set(tree.__all__) - {"AtconError"}
