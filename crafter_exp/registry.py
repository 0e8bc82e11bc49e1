"""Name -> implementation registries: environments, policies, trainers, RL algorithms (one style for all).

Entries are "module:attribute" strings, imported on first use, not objects: the implementations pull in heavy or
optional packages (ALFWorld and TextWorld are an optional extra, hf_local needs torch and transformers, the openai
policy and trainer the openai client), so importing a registry must cost nothing and must work without the extras;
only the entry a config names is imported. An entry without ":attribute" is the module itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import Any, Generic, Optional, TypeVar, cast

from crafter_exp.errors import UserError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """A `kind` of implementation ("env", "model", "trainer", "rl algorithm"), by name.

    `default`: the entry that names not registered resolve to (None: they are an error).
    """

    def __init__(self, kind: str, entries: Mapping[str, str], default: Optional[str] = None) -> None:
        if default is not None and default not in entries:
            raise ValueError(f"default {default!r} is not an entry of the {kind} registry")
        self.kind = kind
        self._entries = dict(entries)
        self._default = default

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def target(self, name: str) -> str:
        """The "module:attribute" string `name` resolves to; an unknown name raises one line."""
        if name in self._entries:
            return self._entries[name]
        if self._default is not None:
            return self._entries[self._default]
        raise UserError(f"unknown {self.kind} {name!r} (known: {', '.join(self._entries)})")

    def module(self, name: str) -> ModuleType:
        """The module of `name`'s entry, imported."""
        return importlib.import_module(self.target(name).partition(":")[0])

    def get(self, name: str) -> T:
        """The object registered as `name`, imported on first use."""
        module, _, attribute = self.target(name).partition(":")
        obj: Any = importlib.import_module(module)
        for part in attribute.split(".") if attribute else ():
            obj = getattr(obj, part)
        return cast(T, obj)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self._entries!r})"
