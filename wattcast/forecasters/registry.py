"""The model registry: built-in models, plugins, and a user's own model from a file or module.

A model is named by a *spec* wherever wattcast takes one (``--model``, ``--models``):

* a built-in name (:data:`wattcast.contract.MODELS`);
* the name of a plugin: an installed package that registers a factory under the entry-point
  group ``wattcast.models``, e.g. in its pyproject.toml::

      [project.entry-points."wattcast.models"]
      arima = "mypackage.models:make_arima"

* ``path/to/file.py:factory`` or ``package.module:factory``: a user's own, not installed.

A factory is called without arguments and returns a :class:`wattcast.forecasters.Model`;
the model's ``name`` (an id: letters, digits, ``_.-``) is what topics, scores and reports
call it.  ``docs/your-own-model.md`` walks through one.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from wattcast.contract import MODELS, model_name
from wattcast.forecasters.base import Model

ENTRY_POINT_GROUP = "wattcast.models"


def plugins() -> dict[str, Any]:
    """The installed plugins: name -> entry point (built-in names cannot be taken)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in MODELS}


def registered() -> list[str]:
    """Every model that can be named alone: the built-ins, then the plugins."""
    return [*MODELS, *sorted(plugins())]


def is_spec(text: str) -> bool:
    """A ``module:factory`` or ``file.py:factory`` spec (not a plain name)."""
    return ":" in text


def absolute_spec(spec: str) -> str:
    """``file.py:factory`` with the file's absolute path (a node may run in another folder)."""
    target, _, factory = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).resolve()}:{factory}"
    return spec


def load_spec(spec: str) -> Model:
    """The model of a plugin name or a ``module:factory`` / ``file.py:factory`` spec (ValueError: one line)."""
    if not is_spec(spec):
        found = plugins().get(spec)
        if found is None:
            known = ", ".join(registered())
            raise ValueError(f"unknown model {spec!r}; known: {known} (or a file.py:factory / module:factory of your own)")
        factory = found.load()
    else:
        factory = _factory(spec)
    try:
        model = factory()
    except Exception as exc:  # a user's code: say whose, in one line
        raise ValueError(f"model {spec!r}: its factory failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, Model):
        raise ValueError(f"model {spec!r}: the factory returned a {type(model).__name__}, not a wattcast Model")
    model_name(model.name)
    return model


def _factory(spec: str) -> Any:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"a model spec is module:factory or file.py:factory, not {spec!r}")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.is_file():
                raise ValueError(f"model {spec!r}: no such file {path}")
            name = f"wattcast_user_model_{abs(hash(str(path)))}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"model {spec!r}: cannot import {target}: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model {spec!r}: {target} has no factory {attr!r}")
    return factory
