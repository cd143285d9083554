"""Registries of pluggable classes by kind (CRM connectors, alert channels).

Each maps a kind to the dotted path of its class, imported on first use, so a
deployment that never uses a kind never imports its module, and model
choices come from here, so adding a kind needs no migration.
"""

from django.utils.module_loading import import_string


class ClassRegistry[T]:
    def __init__(self, noun: str, paths: dict[str, str], labels: dict[str, str]) -> None:
        self.noun = noun  # names the kind in errors, e.g. "CRM kind"
        self.paths = paths
        # Labels live here rather than on the classes, so listing the choices
        # imports no module.
        self.labels = labels
        self._classes: dict[str, type[T]] = {}

    def choices(self) -> list[tuple[str, str]]:
        return [(kind, self.labels.get(kind, kind)) for kind in self.paths]

    def register(self, kind: str, path: str, label: str = "") -> None:
        self.paths[kind] = path
        self.labels[kind] = label or kind
        self._classes.pop(kind, None)

    def get(self, kind: str) -> type[T]:
        if kind not in self._classes:
            try:
                path = self.paths[kind]
            except KeyError:
                known = ", ".join(sorted(self.paths))
                raise ValueError(f"unknown {self.noun} {kind!r} (known: {known})") from None
            self._classes[kind] = import_string(path)
        return self._classes[kind]
