"""The shape shared by the restorer and classifier registries: ``name -> class``, registered by a decorator,
and the one exception type for "cannot run here" (name, reason, fix), with the loader guard that makes a
corrupt, truncated or foreign weights file one of those instead of a traceback."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


class Unavailable(RuntimeError):
    """A model (restorer, classifier, landmarker) that cannot run here. ``reason`` says why, whole, in one line;
    ``fix`` says what to do. Callers read the fields, never parse the message."""

    def __init__(self, name: str, reason: str, fix: str):
        super().__init__(f"{name}: {reason} ({fix})")
        self.name, self.reason, self.fix = name, reason, fix


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (long messages cut at 200 characters)."""
    msg = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, KeyError):
        msg = f"missing entry {msg}"
    text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _load_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, IndexError, EOFError, RuntimeError)
    try:
        from safetensors import SafetensorError

        errors += (SafetensorError,)
    except ImportError:
        pass
    return errors


@contextmanager
def loading(unavailable: type[Unavailable], name: str, path: object, what: str, fix: str) -> Iterator[None]:
    """Turn whatever reading ``path`` raises (truncated, corrupt, another model's file) into ``unavailable``
    naming the model, the file and the fix. An :class:`Unavailable` raised inside passes through."""
    try:
        yield
    except Unavailable as e:  # raised by the loader itself: keep its reason, under the model's name
        raise e if e.name == name else unavailable(name, e.reason, e.fix) from None
    except _load_errors() as e:
        raise unavailable(name, f"{path} is not a readable {what} ({one_line(e)})", fix) from None


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
