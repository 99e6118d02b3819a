"""The handler registry: names, aliases and versions of step handlers, and resolution
of a template's ``handler_class`` string to a handler.

:data:`registry` is the process-wide instance. Handlers land in it when their class is
defined (``StepHandler.__init_subclass__``) and from ``TASKER['HANDLERS']`` /
``TASKER['HANDLERS_FILE']`` (see :mod:`tasker_django.handlers.discovery`).
"""

from __future__ import annotations

import builtins
import copy
import difflib
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from django.utils.module_loading import import_string

from .base import StepHandler, _check_str, dotted_path
from .errors import AmbiguousHandler, HandlerNotFound

__all__ = ["HandlerEntry", "HandlerRegistry", "merge_config", "registry", "version_key"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED_RE = re.compile(rf"{_IDENT}(?:\.{_IDENT})+")
_RUBY_RE = re.compile(rf"{_IDENT}(?:::{_IDENT})+")
_CAMEL_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

#: (namespace, name, version)
EntryKey = tuple[str, str, str]
_VersionPart = tuple[int, int, str]


def version_key(version: str) -> tuple[Any, ...]:
    """Sort key for versions: dotted numeric parts compare as integers
    (``1.10.0 > 1.9.0``), non-numeric parts sort after numeric ones, and a pre-release
    (``1.0.0-rc.1``) sorts before its release. Build metadata (``+...``) is ignored.
    """
    text = version.strip()
    if text[:1] in ("v", "V") and text[1:2].isdigit():
        text = text[1:]
    text = text.split("+", 1)[0]
    main, _, pre = text.partition("-")

    def parts(value: str) -> tuple[_VersionPart, ...]:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in value.split("."))

    return (parts(main), (0, parts(pre)) if pre else (1,))


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two handler configs: nested dicts merge, ``override`` wins otherwise.

    Returns new objects; neither argument is changed.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_config(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass(frozen=True)
class HandlerEntry:
    """One registration: a handler class under a name in a namespace and version.

    ``config`` is the default config of this registration (from settings or YAML);
    ``source`` says where it came from: ``"class"`` (class definition), ``"register"``
    (explicit call), ``"settings"``, ``"file"``, or ``"adhoc"`` (a dotted path that was
    resolved but is not registered).
    """

    name: str
    namespace: str
    version: str
    handler_class: type[StepHandler]
    aliases: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict, hash=False)
    source: str = "register"

    @property
    def key(self) -> EntryKey:
        return (self.namespace, self.name, self.version)

    @property
    def names(self) -> tuple[str, ...]:
        """The name, then the aliases."""
        return (self.name, *self.aliases)

    @property
    def dotted_path(self) -> str:
        return dotted_path(self.handler_class)

    @property
    def registered(self) -> bool:
        return self.source != "adhoc"

    @property
    def metadata(self) -> dict[str, Any]:
        """The class's metadata with this registration's name, namespace and version.

        Config values are left out (they may hold secrets); ``config_keys`` lists them.
        """
        data = self.handler_class.class_metadata(self.config)
        data.update(
            handler_name=self.name,
            namespace=self.namespace,
            version=self.version,
            aliases=builtins.list(self.aliases),
            source=self.source,
            registered=self.registered,
        )
        return data

    def instantiate(
        self, config: Mapping[str, Any] | None = None, logger: logging.Logger | None = None
    ) -> StepHandler:
        """A handler instance configured with this entry's config deep-merged with
        ``config`` (the template's ``handler_config``, which wins)."""
        merged = merge_config(self.config, config or {})
        return self.handler_class(config=merged, logger=logger)


def _conflict(new: HandlerEntry, old: HandlerEntry, label: str) -> ValueError:
    what = "name" if label == old.name else "alias"
    return ValueError(
        f"Cannot register step handler {new.dotted_path} as {label!r} "
        f"(namespace {new.namespace!r}, version {new.version!r}): that {what} is already "
        f"registered by {old.dotted_path}. Choose another name, namespace or version "
        "(class keywords name=, namespace=, version=), or pass register=False."
    )


def _snake(segment: str) -> str:
    return _CAMEL_RE.sub("_", segment).lower()


class HandlerRegistry:
    """Handlers by (namespace, name, version), with aliases. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[EntryKey, HandlerEntry] = {}
        # (namespace, name or alias, version) -> key of the entry holding it
        self._claims: dict[EntryKey, EntryKey] = {}
        # dotted path of the class -> keys of its entries
        self._by_path: dict[str, set[EntryKey]] = {}
        # Derived, rebuilt lazily and never mutated once built (readers need no lock).
        self._index: dict[str, dict[str, dict[str, HandlerEntry]]] | None = None
        self._resolved: dict[tuple[str, str | None], HandlerEntry] = {}
        self._imports: dict[str, type[StepHandler] | str] = {}
        self._generation = 0

    def __repr__(self) -> str:
        return f"<HandlerRegistry: {len(self._entries)} handlers>"

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[HandlerEntry]:
        return iter(self.list())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.contains(name)

    # -- changes -------------------------------------------------------------------

    def register(
        self,
        handler_cls: type[StepHandler],
        name: str | None = None,
        namespace: str | None = None,
        version: str | None = None,
        aliases: tuple[str, ...] | builtins.list[str] = (),
        config: Mapping[str, Any] | None = None,
        *,
        source: str = "register",
    ) -> HandlerEntry:
        """Register ``handler_cls``; name, namespace and version default to the class's.

        Registering the same class (same dotted path) under the same name, namespace and
        version again replaces the entry. A different class there raises ``ValueError``.
        """
        if not (isinstance(handler_cls, type) and issubclass(handler_cls, StepHandler)):
            raise TypeError(f"{handler_cls!r} is not a StepHandler subclass")
        if handler_cls.abstract:
            raise TypeError(f"{dotted_path(handler_cls)} is abstract and cannot be registered")
        if isinstance(aliases, str):
            raise TypeError("aliases must be a tuple of strings, not a string")
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict, not {type(config).__name__}")
        name = _check_str(name if name is not None else handler_cls.handler_name, "name")
        entry = HandlerEntry(
            name=name,
            namespace=_check_str(
                namespace if namespace is not None else handler_cls.handler_namespace,
                "namespace",
            ),
            version=_check_str(
                version if version is not None else handler_cls.handler_version, "version"
            ),
            handler_class=handler_cls,
            aliases=tuple(dict.fromkeys(_check_str(a, "alias") for a in aliases if a != name)),
            config=copy.deepcopy(dict(config or {})),
            source=source,
        )
        with self._lock:
            self._add(entry)
        return entry

    def _add(self, entry: HandlerEntry) -> None:
        path = entry.dotted_path
        # A module-level class defined again is a module reload (classes made in a function
        # share a dotted path by design and are left alone).
        reloaded = entry.source == "class" and "<locals>" not in path
        outgoing: set[EntryKey] = set()
        if reloaded:
            # The reloaded class may have a new name: drop the registration of the old one.
            outgoing = {
                key
                for key in self._by_path.get(path, ())
                if self._entries[key].source == "class" and key != entry.key
            }
        replaced = self._entries.get(entry.key)
        if replaced is not None:
            if replaced.dotted_path != path:
                raise _conflict(entry, replaced, entry.name)
            outgoing.add(replaced.key)
        for label in entry.names:
            holder = self._claims.get((entry.namespace, label, entry.version))
            if holder is not None and holder not in outgoing and holder != entry.key:
                raise _conflict(entry, self._entries[holder], label)
        for key in outgoing:
            self._remove(key)
        self._entries[entry.key] = entry
        self._by_path.setdefault(path, set()).add(entry.key)
        for label in entry.names:
            self._claims[(entry.namespace, label, entry.version)] = entry.key
        if reloaded:
            # Registrations of the previous definition of this class follow the new one.
            for key in self._by_path[path]:
                other = self._entries[key]
                if other.handler_class is not entry.handler_class:
                    self._entries[key] = replace(other, handler_class=entry.handler_class)
        self._changed()

    def _remove(self, key: EntryKey) -> None:
        entry = self._entries.pop(key)
        keys = self._by_path.get(entry.dotted_path)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_path[entry.dotted_path]
        for label in entry.names:
            claim = (entry.namespace, label, entry.version)
            if self._claims.get(claim) == key:
                del self._claims[claim]

    def _changed(self) -> None:
        self._index = None
        self._resolved = {}
        self._imports = {}
        self._generation += 1

    def unregister(self, name: str, namespace: str = "default", version: str | None = None) -> int:
        """Remove the handler registered as ``name`` (all versions if ``version`` is None).

        Returns how many entries were removed.
        """
        with self._lock:
            keys = [
                key
                for key in self._entries
                if key[0] == namespace and key[1] == name and version in (None, key[2])
            ]
            for key in keys:
                self._remove(key)
            if keys:
                self._changed()
            return len(keys)

    def clear(self) -> None:
        """Remove every registration."""
        with self._lock:
            self._entries = {}
            self._claims = {}
            self._by_path = {}
            self._changed()

    @contextmanager
    def isolated(self, *, clear: bool = False) -> Iterator[HandlerRegistry]:
        """Snapshot the registry and restore it on exit (for tests).

        With ``clear=True`` the block starts from an empty registry.
        """
        with self._lock:
            snapshot = self._state()
            if clear:
                self.clear()
        try:
            yield self
        finally:
            with self._lock:
                self._entries, self._claims, self._by_path = snapshot
                self._changed()

    def _state(
        self,
    ) -> tuple[dict[EntryKey, HandlerEntry], dict[EntryKey, EntryKey], dict[str, set[EntryKey]]]:
        """Copies of the primary state."""
        by_path = {path: set(keys) for path, keys in self._by_path.items()}
        return dict(self._entries), dict(self._claims), by_path

    def copy(self) -> HandlerRegistry:
        """An independent registry with the same entries (for dry runs)."""
        other = HandlerRegistry()
        with self._lock:
            other._entries, other._claims, other._by_path = self._state()
        return other

    # -- lookups -------------------------------------------------------------------

    def _get_index(self) -> dict[str, dict[str, dict[str, HandlerEntry]]]:
        index = self._index
        if index is None:
            with self._lock:
                index = self._index
                if index is None:
                    index = {}
                    for entry in self._entries.values():
                        for label in entry.names:
                            by_ns = index.setdefault(label, {})
                            by_ns.setdefault(entry.namespace, {})[entry.version] = entry
                    self._index = index
        return index

    def _select(
        self, label: str, namespace: str | None, version: str | None, *, strict: bool
    ) -> HandlerEntry | None:
        """Entry registered as ``label``. ``strict``: only in ``namespace``; otherwise
        ``namespace`` is preferred and a bare name must not be ambiguous."""
        by_ns = self._get_index().get(label)
        if not by_ns:
            return None
        chosen: dict[str, HandlerEntry] = {}
        for ns, versions in by_ns.items():
            if strict and namespace is not None and ns != namespace:
                continue
            if version is None:
                chosen[ns] = versions[max(versions, key=version_key)]
            elif version in versions:
                chosen[ns] = versions[version]
        if not chosen:
            return None
        if namespace is not None and namespace in chosen:
            return chosen[namespace]
        if len(chosen) == 1:
            return next(iter(chosen.values()))
        first = next(iter(chosen.values()))
        if all(
            e.handler_class is first.handler_class and e.config == first.config
            for e in chosen.values()
        ):
            return chosen.get("default") or chosen[min(chosen)]
        raise AmbiguousHandler(
            label,
            namespace,
            [
                f"{e.dotted_path} (namespace {e.namespace!r}, version {e.version!r})"
                for _, e in sorted(chosen.items())
            ],
        )

    def get(
        self, name: str, namespace: str | None = None, version: str | None = None
    ) -> HandlerEntry:
        """The entry registered as ``name`` (or alias); latest version unless given.

        ``namespace`` None searches all namespaces (``AmbiguousHandler`` if several
        classes match); a namespace restricts the search to it.
        """
        if not isinstance(name, str):
            raise HandlerNotFound(name, namespace, reason="a handler name must be a string")
        entry = self._select(name, namespace, version, strict=True)
        if entry is None:
            reason = None
            if version is not None and self._select(name, namespace, None, strict=True):
                reason = f"version {version!r} is not registered"
            raise HandlerNotFound(name, namespace, self._suggest(name), reason)
        return entry

    def contains(self, name: str, namespace: str | None = None, version: str | None = None) -> bool:
        """Whether ``name`` (or alias) is registered."""
        try:
            self.get(name, namespace, version)
        except HandlerNotFound:
            return False
        except AmbiguousHandler:
            return True
        return True

    def list(self, namespace: str | None = None) -> builtins.list[HandlerEntry]:
        """Entries sorted by namespace, name and version (optionally of one namespace)."""
        entries = [e for e in self._entries.values() if namespace in (None, e.namespace)]
        return sorted(entries, key=lambda e: (e.namespace, e.name, version_key(e.version)))

    # -- resolution ------------------------------------------------------------------

    def resolve(self, reference: str, namespace: str | None = None) -> HandlerEntry:
        """The handler a template's ``handler_class`` names, tried in this order:

        1. a registered name or alias (entries of ``namespace`` preferred);
        2. a dotted path ``package.module.Class`` of a StepHandler subclass;
        3. Ruby-style ``A::B::C``: the last segment ``C`` as a registered name, then
           ``A.B.C`` and ``a.b.C`` as dotted paths.

        Raises ``HandlerNotFound`` (with suggestions) or ``AmbiguousHandler``.
        """
        if not isinstance(reference, str):
            raise HandlerNotFound(
                reference, namespace, reason="a handler reference must be a string"
            )
        cache_key = (reference, namespace)
        entry = self._resolved.get(cache_key)
        if entry is not None:
            return entry
        generation = self._generation
        entry = self._resolve(reference.strip(), namespace)
        with self._lock:
            if self._generation == generation:
                self._resolved[cache_key] = entry
        return entry

    def _resolve(self, reference: str, namespace: str | None) -> HandlerEntry:
        if not reference:
            raise HandlerNotFound(reference, namespace, reason="the handler reference is empty")
        entry = self._select(reference, namespace, None, strict=False)
        if entry is not None:
            return entry
        paths: builtins.list[str] = []
        if _RUBY_RE.fullmatch(reference):
            segments = reference.split("::")
            entry = self._select(segments[-1], namespace, None, strict=False)
            if entry is not None:
                return entry
            paths = [".".join(segments), ".".join([*map(_snake, segments[:-1]), segments[-1]])]
        elif _DOTTED_RE.fullmatch(reference):
            paths = [reference]
        reasons: builtins.list[str] = []
        for path in dict.fromkeys(paths):
            found = self._import(path)
            if isinstance(found, str):
                reasons.append(found)
            else:
                return self._entry_for_class(found)
        reason = "; ".join(reasons) if reasons else None
        raise HandlerNotFound(reference, namespace, self._suggest(reference), reason)

    def _import(self, path: str) -> type[StepHandler] | str:
        """The StepHandler class at ``path``, or why not (cached until the next change)."""
        found = self._imports.get(path)
        if found is not None:
            return found
        result: type[StepHandler] | str
        try:
            obj = import_string(path)
        except ImportError as exc:
            result = f"{path!r} cannot be imported ({exc})"
        except Exception as exc:
            result = f"importing {path!r} failed ({type(exc).__name__}: {exc})"
        else:
            if not (isinstance(obj, type) and issubclass(obj, StepHandler)):
                result = f"{path!r} is not a StepHandler subclass"
            elif obj.abstract:
                result = f"{path!r} is an abstract StepHandler"
            else:
                result = obj
        self._imports[path] = result
        return result

    def _entry_for_class(self, cls: type[StepHandler]) -> HandlerEntry:
        """The class's own registration, or an unregistered ad-hoc entry."""
        by_ns = self._get_index().get(cls.handler_name, {})
        entry = by_ns.get(cls.handler_namespace, {}).get(cls.handler_version)
        if entry is not None and entry.handler_class is cls:
            return entry
        return HandlerEntry(
            name=cls.handler_name,
            namespace=cls.handler_namespace,
            version=cls.handler_version,
            handler_class=cls,
            source="adhoc",
        )

    def _suggest(self, reference: str) -> builtins.list[str]:
        labels = builtins.list(self._get_index())
        by_lower = {label.lower(): label for label in labels}
        words = [reference]
        for separator in ("::", "."):
            if separator in reference:
                words.append(reference.rsplit(separator, 1)[-1])
        found: builtins.list[str] = []
        for word in words:
            exact = by_lower.get(word.lower())
            if exact is not None and exact != reference:
                found.append(exact)
            found += difflib.get_close_matches(word, labels, n=3, cutoff=0.6)
        return builtins.list(dict.fromkeys(found))[:3]


#: The process-wide registry.
registry = HandlerRegistry()
