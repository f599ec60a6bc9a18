"""Which environment/tenant/team a namespace is bound to.

The decision core asks a ``BindingSource``; it never talks to the cluster itself. Two sources exist:
``StaticBindings`` (the config file's ``namespaces:``, always ready) and the cluster cache in
``namespace_cache.py`` (namespace labels through a watch), combined by ``LayeredBindings``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Protocol

from gtc_admission.config import NamespaceBinding


class NotReady(enum.Enum):
    """The source has not synced yet: a worker pod cannot be judged now and must be retried."""

    NOT_READY = "not-ready"


NOT_READY = NotReady.NOT_READY

# A binding, None (the namespace is bound to nothing), or NOT_READY.
Lookup = NamespaceBinding | None | NotReady


class BindingSource(Protocol):
    def lookup(self, namespace: str) -> Lookup: ...

    @property
    def ready(self) -> bool: ...


class StaticBindings:
    """Bindings from the configuration file: always ready."""

    def __init__(self, bindings: Mapping[str, NamespaceBinding]) -> None:
        self._bindings = dict(bindings)

    @property
    def ready(self) -> bool:
        return True

    def lookup(self, namespace: str) -> Lookup:
        return self._bindings.get(namespace)


class LayeredBindings:
    """Asks each source in order; the first that binds the namespace wins.

    Static bindings come first: they are the operator's explicit intent in the webhook's own config.
    A source that is not ready yet answers NOT_READY only if no earlier source bound the namespace.
    """

    def __init__(self, sources: Sequence[BindingSource]) -> None:
        self._sources = tuple(sources)

    @property
    def ready(self) -> bool:
        return all(source.ready for source in self._sources)

    def lookup(self, namespace: str) -> Lookup:
        not_ready = False
        for source in self._sources:
            found = source.lookup(namespace)
            if isinstance(found, NamespaceBinding):
                return found
            if found is NOT_READY:
                not_ready = True
        return NOT_READY if not_ready else None
