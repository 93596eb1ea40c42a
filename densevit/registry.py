"""Name -> factory registries, filled by decorators.

One small class serves every kind of thing we build by name (backbones, models, tasks,
converters). An unknown name fails with the closest registered names suggested, so a typo in
a config is a one-line fix rather than a stack trace.

A registry never imports the modules that register into it. Those that live in other
packages (the heads fill ``MODELS`` and ``TASKS``) are found through an entry-point group of
the installed distribution (``pyproject.toml``, ``[project.entry-points."densevit.heads"]``),
loaded the first time a name is looked up; a third-party package can add its own models and
tasks to the same group.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from typing import Any, Callable, Iterator, TypeVar

from densevit.errors import UserInputError

F = TypeVar("F", bound=Callable[..., Any])

# The entry-point group of the packages that register models and tasks (the heads).
HEAD_PLUGINS = "densevit.heads"


class UnknownNameError(UserInputError, KeyError):
    """Raised when a registry is asked for a name it does not hold (a user-input error)."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence
        return str(self.args[0])


class Registry:
    """A mapping from names to factory callables.

    Example::

        BACKBONES = Registry("backbone")

        @BACKBONES.register("resnet50")
        def resnet50(**kw): ...

        BACKBONES.build("resnet50", pretrained=None)
    """

    def __init__(self, kind: str, plugin_group: str | None = None) -> None:
        self.kind = kind
        self.plugin_group = plugin_group
        self._plugins_loaded = plugin_group is None
        self._factories: dict[str, Callable[..., Any]] = {}

    def _load_plugins(self) -> None:
        """Import the modules of the entry-point group once (they register on import)."""
        if self._plugins_loaded:
            return
        # importlib.metadata takes tens of milliseconds: imported when a name is first looked up
        from importlib.metadata import entry_points

        self._plugins_loaded = True
        found = entry_points(group=self.plugin_group)
        if not found:
            raise RuntimeError(
                f"no {self.plugin_group!r} entry points: densevit's package metadata is missing "
                "(install it with pip install -e .)"
            )
        for entry in sorted(found, key=lambda e: e.name):
            importlib.import_module(entry.value)

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator that registers a factory under ``name`` (default: the function's name)."""

        def decorator(factory: F) -> F:
            key = name or factory.__name__
            if key in self._factories:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._factories[key] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name``; unknown names raise with close matches."""
        if name not in self._factories:
            self._load_plugins()
        try:
            return self._factories[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._factories, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._factories))})"
            ) from None

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def names(self, pattern: str | None = None, load_plugins: bool = True) -> list[str]:
        """Sorted registered names, optionally filtered by a shell-style ``pattern``.

        ``load_plugins=False`` lists only what the modules imported so far have registered.
        """
        if load_plugins:
            self._load_plugins()
        names = sorted(self._factories)
        if pattern:
            names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        return names

    def __contains__(self, name: object) -> bool:
        if name not in self._factories:
            self._load_plugins()
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._factories)
