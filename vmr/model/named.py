"""A table of classes by name, for the registries a config value selects (model kinds,
objectives): `register` adds a class under its name attribute, `lookup` answers a name or
raises a one-line error that lists the known ones. A dict, so `in`, iteration and `pop` work."""

from __future__ import annotations

from vmr.errors import VmrError


class Named(dict):
    def __init__(self, attr: str, what: str):
        super().__init__()
        self.attr = attr        # the class attribute that holds a class's name
        self.what = what        # how errors name a value: "model kind", "model.objective"

    def register(self, cls):
        """Make `cls` the entry for its name (a name not empty and not taken)."""
        name = getattr(cls, self.attr, "")
        if not name or name in self:
            raise ValueError(f"{self.what} {name!r}: empty or taken")
        self[name] = cls
        return cls

    def lookup(self, name: str):
        if name not in self:
            raise VmrError(f"unknown {self.what} {name!r} (known: {', '.join(self)})")
        return self[name]
