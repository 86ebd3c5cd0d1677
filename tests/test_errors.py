"""Typed errors: one module defines them all, and input is never checked by ``assert``."""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
from pathlib import Path

import pytest

import decloud
from decloud import errors
from decloud.errors import ArgumentError, DecloudError, LocatedValueError

PACKAGE = Path(decloud.__file__).parent

@functools.cache
def modules() -> list[tuple[str, ast.Module]]:
    """Every module of the package, parsed, with its path relative to the package."""
    found = [(p.relative_to(PACKAGE).as_posix(), ast.parse(p.read_text(), str(p)))
             for p in sorted(PACKAGE.rglob("*.py"))]
    assert len(found) > 20  # the walk found the package
    return found


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def exception_classes(tree: ast.Module, known: set[str]) -> list[str]:
    """Classes of a module deriving from an exception (builtin, decloud's or any *Error)."""
    classes = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    found: set[str] = set()
    changed = True
    while changed:  # classes deriving from classes of the same module
        changed = False
        for cls in classes:
            if cls.name in found:
                continue
            for base in map(_base_name, cls.bases):
                builtin = getattr(builtins, base, None)
                if (base in known or base in found
                        or base.endswith(("Error", "Exception", "Warning"))
                        or (inspect.isclass(builtin) and issubclass(builtin, BaseException))):
                    found.add(cls.name)
                    changed = True
                    break
    return sorted(found)


def caught(tree: ast.Module) -> set[str]:
    """Names of the exception classes a module's ``except`` clauses catch."""
    names: set[str] = set()
    for handler in ast.walk(tree):
        if isinstance(handler, ast.ExceptHandler) and handler.type is not None:
            types = (handler.type.elts if isinstance(handler.type, ast.Tuple)
                     else [handler.type])
            names.update(_base_name(t) for t in types)
    return names


def test_exception_classes_live_in_errors_py() -> None:
    """Every error a caller can meet is in errors.py.

    The one exception: a private (``_Name``) class that its own module catches, a
    signal between two parts of one module (e.g. aborting a writer thread) that never
    reaches a caller.
    """
    known = {name for name, obj in vars(errors).items()
             if inspect.isclass(obj) and issubclass(obj, BaseException)}
    assert {"DecloudError", "CatalogError", "ModelConfigError", "ModelCardError",
            "LocatedValueError"} <= known
    elsewhere = {}
    for path, tree in modules():
        if path == "errors.py":
            continue
        names = [n for n in exception_classes(tree, known)
                 if not (n.startswith("_") and n in caught(tree))]
        if names:
            elsewhere[path] = names
    assert elsewhere == {}, f"define these in decloud/errors.py: {elsewhere}"
    # The walk does see them where they are.
    own = exception_classes(ast.parse((PACKAGE / "errors.py").read_text()), set())
    assert set(own) == known - {"Exception", "ValueError"}


def test_the_detector_finds_exception_classes() -> None:
    tree = ast.parse("class A(ValueError): ...\nclass B(A): ...\nclass C(x.FooError): ...\n"
                     "class D(CatalogError): ...\nclass E(object): ...\nclass F(OSError): ...\n"
                     "try:\n    pass\nexcept (A, x.C):\n    pass\nexcept F:\n    pass\n")
    assert exception_classes(tree, {"CatalogError"}) == ["A", "B", "C", "D", "F"]
    assert caught(tree) == {"A", "C", "F"}


def test_moved_errors_are_still_importable_from_their_old_modules() -> None:
    from decloud.index.catalog import CatalogError
    from decloud.layouts.model import LocatedValueError as Located

    assert CatalogError is errors.CatalogError and Located is LocatedValueError
    # decloud.models imports Keras (seconds): those imports are read rather than run.
    for path, name in (("models/card.py", "ModelCardError"),
                       ("models/config.py", "ModelConfigError")):
        tree = dict(modules())[path]
        imported = {(node.module, alias.name) for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) for alias in node.names}
        assert ("decloud.errors", name) in imported, path
        assert issubclass(getattr(errors, name), DecloudError)


def test_every_error_names_its_file_and_field() -> None:
    err = ArgumentError("data of shape (2, 3) is not (1, height, width)", path="out.tif",
                        field="data")
    assert str(err) == "out.tif [data]: data of shape (2, 3) is not (1, height, width)"
    assert isinstance(err, ValueError) and isinstance(err, DecloudError)
    located = LocatedValueError("bound 120 is outside [0, 100]", ("cloud", 1))
    assert located.loc == ("cloud", 1) and isinstance(located, ValueError)
    with pytest.raises(DecloudError):
        raise ArgumentError("x")


def test_no_assert_checks_input() -> None:
    """``assert`` vanishes under ``python -O``: input is checked with typed errors."""
    found = [f"decloud/{path}:{node.lineno}" for path, tree in modules()
             for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert found == [], "replace these asserts by `if ...: raise <typed error>`"
