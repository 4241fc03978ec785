"""Finds backfill definitions: every module of `backfills.definitions`, plus any
modules or packages named in `BACKFILL_DEFINITIONS`. Adding a backfill is adding a
module that exposes `BACKFILL`; no engine code changes."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from backfills.definition import Backfill, DefinitionError

__all__ = ["Registry", "UnknownBackfill", "BUILTIN_PACKAGE"]

BUILTIN_PACKAGE = "backfills.definitions"


class UnknownBackfill(KeyError):
    """No backfill of that name is registered (exit 2)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _modules(name: str) -> Iterable[ModuleType]:
    module = importlib.import_module(name)
    yield module
    if hasattr(module, "__path__"):
        for info in pkgutil.iter_modules(module.__path__, prefix=f"{name}."):
            yield importlib.import_module(info.name)


@dataclass(frozen=True)
class Registry:
    """Backfills by name."""

    backfills: dict[str, Backfill]

    @classmethod
    def discover(cls, extra_modules: Iterable[str] = ()) -> Registry:
        """Load the shipped definitions and those of `extra_modules`."""
        found: dict[str, Backfill] = {}
        for package in (BUILTIN_PACKAGE, *extra_modules):
            for module in _modules(package):
                definition = getattr(module, "BACKFILL", None)
                if definition is None:
                    continue
                if not isinstance(definition, Backfill):
                    raise DefinitionError(f"{module.__name__}.BACKFILL is not a Backfill")
                if definition.name in found and found[definition.name] is not definition:
                    raise DefinitionError(f"two definitions are named {definition.name!r}")
                found[definition.name] = definition
        return cls(dict(sorted(found.items())))

    def get(self, name: str) -> Backfill:
        """The definition named `name`, or `UnknownBackfill` with a suggestion."""
        try:
            return self.backfills[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.backfills, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(self.backfills)
            raise UnknownBackfill(f"unknown backfill {name!r}{hint} (known: {known})") from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.backfills.values())
