"""Resolve a ``--schema`` argument: a built-in name, ``module:Class`` or ``file.py:Class``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from pydantic import BaseModel

from polymodal.errors import ConfigError
from polymodal.schemas.invoice import Invoice
from polymodal.schemas.receipt import Receipt

BUILTIN_SCHEMAS: dict[str, type[BaseModel]] = {"invoice": Invoice, "receipt": Receipt}


def _load_module(target: str) -> object:
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError(f"schema file {target} does not exist")
        spec = importlib.util.spec_from_file_location(f"_polymodal_schema_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import schema file {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ConfigError(f"cannot import schema module {target!r}: {exc}") from exc


def resolve_schema(name: str) -> type[BaseModel]:
    """``invoice`` / ``receipt``, ``package.module:Class`` or ``path/to/file.py:Class`` -> the model class."""
    if name in BUILTIN_SCHEMAS:
        return BUILTIN_SCHEMAS[name]
    target, sep, attr = name.rpartition(":")
    if not sep or not target or not attr:
        raise ConfigError(
            f"unknown schema {name!r}",
            hint=f"use one of {', '.join(BUILTIN_SCHEMAS)}, module:Class or file.py:Class",
        )
    obj = getattr(_load_module(target), attr, None)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ConfigError(f"{name!r} does not name a pydantic BaseModel class")
    return obj


__all__ = ["BUILTIN_SCHEMAS", "resolve_schema"]
