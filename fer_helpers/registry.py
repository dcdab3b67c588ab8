"""The shape shared by the restorer and classifier registries: ``name -> class``, registered by a decorator,
and the one exception type for "cannot run here" (name, reason, fix), with the loader guard that makes a
corrupt, truncated or foreign weights file one of those instead of a traceback."""

from __future__ import annotations

import importlib
import warnings
from contextlib import contextmanager
from importlib import metadata
from typing import Callable, Iterator


class Unavailable(RuntimeError):
    """A model (restorer, classifier, landmarker) that cannot run here. ``reason`` says why, whole, in one line;
    ``fix`` says what to do. Callers read the fields, never parse the message."""

    def __init__(self, name: str, reason: str, fix: str):
        super().__init__(f"{name}: {reason} ({fix})")
        self.name, self.reason, self.fix = name, reason, fix


class RestorerUnavailable(Unavailable):
    """A restorer that cannot run in this environment."""


class ClassifierUnavailable(Unavailable):
    """A classifier that cannot run in this environment."""


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


# ---- plug-ins -----------------------------------------------------------------------------------------

#: entry-point groups a package declares to add models without editing fer_helpers
RESTORER_PLUGINS, CLASSIFIER_PLUGINS = "fer_study.restorers", "fer_study.classifiers"
_LOADED_GROUPS: set[str] = set()


def _adopt(registry: dict[str, type], name: str, cls: object, base: type, origin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"plug-in {name!r} ({origin}) is not a subclass of fer_helpers {base.__name__}; "
                         f"subclass it (see the README's plug-in section)")
    cls.name = name
    cls.family = getattr(cls, "family", "") or "plug-in"
    registry[name] = cls


def _entry_points(registry: dict[str, type], group: str, base: type) -> None:
    """Register the classes that installed packages declare under ``group`` (once per process)."""
    if group in _LOADED_GROUPS:
        return
    _LOADED_GROUPS.add(group)
    for ep in metadata.entry_points(group=group):
        if ep.name in registry:
            continue
        try:
            _adopt(registry, ep.name, ep.load(), base, f"entry point {ep.value}")
        except Exception as e:  # a broken plug-in must not take the built-in models down with it
            warnings.warn(f"plug-in {ep.name!r} ({group} = {ep.value}) not loaded: {one_line(e)}", stacklevel=2)


def known(registry: dict[str, type], name: str, group: str, base: type) -> bool:
    """Whether ``name`` can be built: a built-in, a plug-in installed under ``group``, or ``package.module:Class``
    (imported and registered under that name). A ``module:Class`` that cannot be imported raises ValueError."""
    _entry_points(registry, group, base)
    if name in registry:
        return True
    if ":" not in name:
        return False
    module, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"plug-in {name!r}: cannot import it ({one_line(e)}); install the package or put it on PYTHONPATH") from None
    _adopt(registry, name, cls, base, name)
    return True


def names(registry: dict[str, type], group: str, base: type) -> list[str]:
    _entry_points(registry, group, base)
    return sorted(registry)
