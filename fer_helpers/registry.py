"""The shape shared by the restorer and classifier registries: ``name -> class``, registered by a decorator."""

from __future__ import annotations

from typing import Callable


def registrar(registry: dict[str, type]) -> Callable[[str, str], Callable[[type], type]]:
    """A ``register(name, family)`` class decorator that sets ``cls.name``/``cls.family`` and files the class."""

    def register(name: str, family: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            cls.name, cls.family = name, family
            registry[name] = cls
            return cls

        return deco

    return register


def doc_line(cls: type) -> str:
    """The first line of a class's docstring: its one-line description in tables and listings."""
    return cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.__name__
