"""The one registry style for every extension point (healthchecks' TRANSPORTS).

A registry maps a kind to (label, "dotted.path") and imports the object on
first use, then keeps it: a deployment that never uses a kind never imports
its module, and listing the choices imports none. Model fields take
`choices=` from a module-level function returning `registry.choices()`, so
adding a kind needs no migration.

Apps add their kinds in AppConfig.ready() with `register()`; `before=` puts a
kind ahead of another one where order matters (the inbox handlers).
"""

from collections.abc import Iterator, Mapping
from typing import Any

from django.utils.module_loading import import_string


class Registry[T](Mapping[str, tuple[str, str]]):
    """A read-only mapping kind -> (label, dotted path), in registration order."""

    def __init__(self, noun: str, entries: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.noun = noun  # names the kind in errors, e.g. "CRM kind"
        self._entries: dict[str, tuple[str, str]] = dict(entries or {})
        self._loaded: dict[str, T] = {}

    def __getitem__(self, kind: str) -> tuple[str, str]:
        return self._entries[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<Registry {self.noun}: {', '.join(self._entries) or 'empty'}>"

    def choices(self) -> list[tuple[str, str]]:
        return [(kind, label) for kind, (label, _path) in self._entries.items()]

    def label(self, kind: str) -> str:
        return self._entry(kind)[0]

    def path(self, kind: str) -> str:
        return self._entry(kind)[1]

    def register(self, kind: str, label: str, path: str, *, before: str | None = None) -> None:
        """Add (or replace) a kind; `before` names the kind it must come ahead of."""
        entries = {k: v for k, v in self._entries.items() if k != kind}
        if before is None:
            entries[kind] = (label or kind, path)
        else:
            self._entry(before)  # an unknown anchor is a mistake, not "append"
            ordered: dict[str, tuple[str, str]] = {}
            for k, v in entries.items():
                if k == before:
                    ordered[kind] = (label or kind, path)
                ordered[k] = v
            entries = ordered
        self._entries = entries
        self._loaded.pop(kind, None)

    def unregister(self, kind: str) -> None:
        self._entries.pop(kind, None)
        self._loaded.pop(kind, None)

    def load(self, kind: str) -> T:
        """The object registered for `kind`, imported on first use."""
        if kind not in self._loaded:
            self._loaded[kind] = import_string(self.path(kind))
        return self._loaded[kind]

    def _entry(self, kind: Any) -> tuple[str, str]:
        try:
            return self._entries[kind]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries)) or "none registered"
            raise ValueError(f"unknown {self.noun} {kind!r} (known: {known})") from None
