"""One exception tree: every error of the deployed code is in core/errors.py, drawn there."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import dataset_export
from dataset_export.core import errors
from dataset_export.core.errors import (
    ClientError,
    ExportError,
    HttpError,
    PermanentError,
    ServiceUnavailable,
    TransientError,
)


def _runtime_modules() -> list[str]:
    """Every module of the deployed package (the tooling is in dataset_export_tools, not here)."""
    return [info.name for info in pkgutil.walk_packages(dataset_export.__path__, "dataset_export.")]


def _tree_classes() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == errors.__name__
    }


def test_every_exception_of_the_deployed_code_is_defined_in_core_errors() -> None:
    """No module but core/errors.py defines an exception class (private ones included)."""
    modules = _runtime_modules()
    assert "dataset_export.adapters.gcs_storage" in modules  # the walk really finds them
    elsewhere = []
    for name in modules:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and name != errors.__name__
            ):
                elsewhere.append(f"{name}.{attr}")
    assert elsewhere == []


def test_every_error_is_transient_or_permanent_and_none_is_both() -> None:
    """Each concrete error sits on exactly one retry branch (roots and the HTTP base on none)."""
    roots = {ExportError, TransientError, PermanentError, HttpError}
    for name, cls in _tree_classes().items():
        assert issubclass(cls, ExportError), name
        if cls in roots:
            continue
        assert issubclass(cls, TransientError) != issubclass(cls, PermanentError), name


def test_the_docstring_draws_every_class_of_the_tree() -> None:
    """The tree drawn at the top of core/errors.py names each class in the module, once."""
    drawn = re.findall(r"^\s*[*x+\-·] (\w+)", errors.__doc__ or "", re.MULTILINE)
    assert sorted(drawn) == sorted(_tree_classes())


def test_a_503_is_transient_and_renders_as_before() -> None:
    """ServiceUnavailable is retried, not recorded as permanent, and keeps its status and body."""
    exc = ServiceUnavailable("the export queue is unavailable; nothing was created, please retry")
    assert isinstance(exc, TransientError)
    assert not isinstance(exc, PermanentError)
    assert not isinstance(exc, ClientError)
    assert isinstance(exc, HttpError)
    assert exc.status == 503
    assert exc.to_body() == {
        "error": {
            "code": "service_unavailable",
            "message": "the export queue is unavailable; nothing was created, please retry",
        }
    }
