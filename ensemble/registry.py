"""Name → lazy entry point registries (gymnasium-style).

A registry maps a short name (equal to the file stem of the component) to an entry point string
``"package.module:Attr"``. Nothing is imported until a component is loaded, so listing components is
cheap, and an unknown name fails with the list of valid names.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any


class UnknownComponentError(KeyError):
    """Raised when a registry has no entry of the requested name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One registered component.

    Attributes:
        name: registry name (the component's file stem).
        entry_point: ``"module.path:Attribute"``, imported lazily.
        summary: one line shown by ``ensemble … list`` commands.
        defaults: keyword arguments merged under the caller's when the component is built.
        tiny: keyword arguments that build the component on tiny real models (contract tests and
            smoke runs use them; every registered component declares them).
    """

    name: str
    entry_point: str
    summary: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] | None = None


class Registry:
    """A named family of components (scorers, generators, tasks).

    Args:
        kind: what the registry holds, used in error messages ("scorer", "task", …).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(
        self, name: str, entry_point: str, summary: str = "", tiny: dict[str, Any] | None = None, **defaults: Any
    ) -> None:
        """Register ``name`` → ``entry_point``; re-registering the same name elsewhere is an error."""
        if ":" not in entry_point:
            raise ValueError(f"entry point {entry_point!r} must look like 'package.module:Attribute'")
        if name in self._entries and self._entries[name].entry_point != entry_point:
            raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name].entry_point}")
        self._entries[name] = Entry(name, entry_point, summary, dict(defaults), tiny)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """All entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; unknown names raise with the valid choices and a suggestion."""
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind}s: {', '.join(self.names())}"
            ) from None

    def load(self, name: str) -> Any:
        """Import and return the object behind ``name``."""
        module_name, attr = self.entry(name).entry_point.split(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)

    def make(self, name: str, **kwargs: Any) -> Any:
        """Build the component ``name`` with the entry's defaults overridden by ``kwargs``."""
        entry = self.entry(name)
        return self.load(name)(**{**entry.defaults, **kwargs})

    def make_tiny(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` on tiny real models (its registered ``tiny`` arguments)."""
        entry = self.entry(name)
        if entry.tiny is None:
            raise ValueError(f"{self.kind} {name!r} registers no tiny configuration (tiny={{...}})")
        return self.make(name, **{**entry.tiny, **kwargs})


SCORERS = Registry("scorer")
GENERATORS = Registry("generator")
TASKS = Registry("task")
