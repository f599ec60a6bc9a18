"""Namespace bindings read from the cluster: namespace labels, kept in memory by a list + watch.

Admission requests must not wait for the API server (the webhook sits in the API server's own request
path), so bindings are answered from memory. A thread lists the Namespaces once, then watches from the
list's resourceVersion; label changes arrive as events and take effect without a restart.

Layout: the event interpretation (``binding_from_labels``, ``interpret_event``, ``parse_list_page``) is
pure and unit-tested with synthetic events; ``NamespaceCache`` applies what they return and runs the
loop against a ``NamespaceApi``; ``KubernetesNamespaceApi`` is the only part that talks HTTP.

Until the first list has completed the cache is not ready: lookups answer NOT_READY, worker pods are
refused with a retriable message, and ``/readyz`` says 503. After that it stays ready, also while it
re-lists or backs off after an error: slightly stale bindings are better than refusing every worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from gtc_admission import constants as c
from gtc_admission.bindings import NOT_READY, Lookup
from gtc_admission.config import NamespaceBinding

log = logging.getLogger(__name__)

ENV_KUBERNETES_SERVICE_HOST: Final = "KUBERNETES_SERVICE_HOST"
ENV_KUBECONFIG: Final = "KUBECONFIG"

HTTP_GONE: Final = 410
# The kubernetes client's line splitter for streamed responses (it keeps partial lines across chunks).
_iter_resp_lines: Callable[[urllib3.HTTPResponse], Iterator[str]] = iter_resp_lines
# Same rule as for tenants/teams in the config file: they end up in Vault role names and paths.
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_DNS_LABEL: Final = 63


# ---------------------------------------------------------------------------------------------
# Credentials: decided once at start-up from the environment.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterCredentials:
    """Where the Kubernetes API credentials come from: the pod's ServiceAccount, or a kubeconfig file."""

    in_cluster: bool
    kubeconfig: str | None = None

    def describe(self) -> str:
        return "in-cluster ServiceAccount" if self.in_cluster else f"kubeconfig {self.kubeconfig}"


def cluster_credentials_from_env(environ: Mapping[str, str]) -> ClusterCredentials | None:
    """In-cluster if KUBERNETES_SERVICE_HOST is set, else KUBECONFIG if set, else no cluster source."""
    if environ.get(ENV_KUBERNETES_SERVICE_HOST):
        return ClusterCredentials(in_cluster=True)
    kubeconfig = environ.get(ENV_KUBECONFIG)
    if kubeconfig:
        return ClusterCredentials(in_cluster=False, kubeconfig=kubeconfig)
    return None


def client_configuration(
    credentials: ClusterCredentials, *, context: str | None = None
) -> k8s_client.Configuration:
    """The kubernetes client's configuration from these credentials (``context``: of the kubeconfig);
    raises kubernetes.config.ConfigException if they are unusable. No request is made."""
    configuration = k8s_client.Configuration()
    if credentials.in_cluster:
        load_incluster: Callable[..., None] = k8s_config.load_incluster_config
        load_incluster(client_configuration=configuration)
    else:
        # persist_config=False: never write refreshed tokens back into the operator's file.
        load_kubeconfig: Callable[..., None] = k8s_config.load_kube_config
        load_kubeconfig(
            config_file=credentials.kubeconfig,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    return configuration


# ---------------------------------------------------------------------------------------------
# Pure part: what a namespace's labels and a watch event mean.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelBinding:
    """A namespace's binding from its labels; ``problem`` says why labels that are present do not bind."""

    binding: NamespaceBinding | None
    problem: str | None = None


def _valid_label(value: str) -> bool:
    return len(value) <= _MAX_DNS_LABEL and bool(_DNS_LABEL.match(value))


def binding_from_labels(labels: Mapping[str, Any]) -> LabelBinding:
    """greentic.ai/env + greentic.ai/tenant (+ greentic.ai/team, default "default") bind a namespace.

    An env without a usable tenant cannot be bound (a worker's Vault role and paths need the tenant): the
    namespace is treated as bound to nothing, and ``problem`` names the label so that it gets logged.
    """
    env, tenant, team = labels.get(c.LABEL_ENV), labels.get(c.LABEL_TENANT), labels.get(c.LABEL_TEAM)
    if not env:
        if tenant or team:
            return LabelBinding(None, f"{c.LABEL_TENANT}/{c.LABEL_TEAM} set without {c.LABEL_ENV}")
        return LabelBinding(None)
    if not isinstance(env, str):
        return LabelBinding(None, f"{c.LABEL_ENV} is not a string")
    if not isinstance(tenant, str) or not tenant:
        return LabelBinding(None, f"{c.LABEL_ENV} set without {c.LABEL_TENANT}")
    if not _valid_label(tenant):
        return LabelBinding(None, f"{c.LABEL_TENANT} is not a DNS label")
    if team is None or team == "":
        team = c.DEFAULT_TEAM
    if not isinstance(team, str) or not _valid_label(team):
        return LabelBinding(None, f"{c.LABEL_TEAM} is not a DNS label")
    return LabelBinding(NamespaceBinding(env=env, tenant=tenant, team=team))


@dataclass(frozen=True)
class Upsert:
    """A namespace was added or changed; ``binding`` None means it is (now) bound to nothing."""

    name: str
    labels: LabelBinding
    resource_version: str | None


@dataclass(frozen=True)
class Delete:
    name: str
    resource_version: str | None


@dataclass(frozen=True)
class Bookmark:
    """No change, only a newer resourceVersion to resume the watch from."""

    resource_version: str


@dataclass(frozen=True)
class Relist:
    """Our resourceVersion is too old (410 Gone): list again, then watch from the new one."""


Change = Upsert | Delete | Bookmark | Relist


class WatchError(Exception):
    """The watch failed in a way that needs a back-off (an ERROR event other than 410, a malformed event)."""


class ResourceExpired(Exception):
    """The API server answered 410 Gone to a list continuation or a watch request."""


def _metadata(obj: object) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise WatchError("event object is not an object")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise WatchError("event object has no metadata")
    return meta


def _resource_version(meta: Mapping[str, Any]) -> str | None:
    rv = meta.get("resourceVersion")
    return rv if isinstance(rv, str) and rv else None


def _name(meta: Mapping[str, Any]) -> str:
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise WatchError("namespace without a name")
    return name


def _labels(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = meta.get("labels")
    return labels if isinstance(labels, Mapping) else {}


def interpret_event(event: Mapping[str, Any]) -> Change:
    """What one watch event (as the API server sends it: ``{"type": ..., "object": ...}``) means."""
    kind = event.get("type")
    obj = event.get("object")
    if kind in ("ADDED", "MODIFIED"):
        meta = _metadata(obj)
        return Upsert(_name(meta), binding_from_labels(_labels(meta)), _resource_version(meta))
    if kind == "DELETED":
        meta = _metadata(obj)
        return Delete(_name(meta), _resource_version(meta))
    if kind == "BOOKMARK":
        rv = _resource_version(_metadata(obj))
        if rv is None:
            raise WatchError("bookmark without a resourceVersion")
        return Bookmark(rv)
    if kind == "ERROR":
        # The object is a metav1.Status; 410 means the resourceVersion we watch from was compacted away.
        code = obj.get("code") if isinstance(obj, Mapping) else None
        if code == HTTP_GONE:
            return Relist()
        reason = obj.get("reason") if isinstance(obj, Mapping) else None
        raise WatchError(f"watch error event: code {code}, reason {reason}")
    raise WatchError(f"unknown watch event type {kind!r}"[:100])


@dataclass(frozen=True)
class ListPage:
    namespaces: tuple[tuple[str, LabelBinding], ...]
    resource_version: str | None
    continue_token: str | None


def parse_list_page(document: Mapping[str, Any]) -> ListPage:
    """One page of a NamespaceList."""
    items = document.get("items")
    if items is None:
        items = []
    if not isinstance(items, list):
        raise WatchError("namespace list without items")
    namespaces = []
    for item in items:
        meta = _metadata(item)
        namespaces.append((_name(meta), binding_from_labels(_labels(meta))))
    raw_meta = document.get("metadata")
    list_meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    token = list_meta.get("continue")
    return ListPage(
        namespaces=tuple(namespaces),
        resource_version=_resource_version(list_meta),
        continue_token=token if isinstance(token, str) and token else None,
    )


def backoff_delay(failures: int, *, initial: float, maximum: float) -> float:
    """Exponential back-off: initial, 2x, 4x, ... capped at maximum."""
    return min(maximum, initial * (1 << min(failures, 32)))


# ---------------------------------------------------------------------------------------------
# The cache and its loop.
# ---------------------------------------------------------------------------------------------


class NamespaceApi(Protocol):
    """The two Kubernetes calls the cache needs; the seam that tests replace."""

    def list_page(self, *, limit: int, continue_token: str | None) -> Mapping[str, Any]:
        """GET /api/v1/namespaces?limit=...&continue=...; raises ResourceExpired on 410."""
        ...

    def watch(
        self, *, resource_version: str, timeout_seconds: int
    ) -> Generator[Mapping[str, Any], None, None]:
        """GET /api/v1/namespaces?watch=true&resourceVersion=...: the events, one dict each.

        A generator, so that the loop can close it (and the HTTP response) the moment it stops reading.
        """
        ...

    def interrupt(self) -> None:
        """Unblock a watch in progress from another thread (used by stop)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CacheSettings:
    page_size: int = 500
    # The API server ends a watch after this long; we then resume from the last resourceVersion.
    watch_timeout_seconds: int = 300
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    # A watch that ends this quickly without a single event is treated as a failure (no busy loop).
    min_watch_seconds: float = 1.0


class NamespaceCache:
    """A BindingSource answered from memory, kept current by a list + watch thread."""

    def __init__(self, api: NamespaceApi, settings: CacheSettings | None = None) -> None:
        self._api = api
        self._settings = settings or CacheSettings()
        self._lock = threading.Lock()
        self._bindings: dict[str, NamespaceBinding] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._resource_version: str | None = None

    # --- BindingSource ---

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def lookup(self, namespace: str) -> Lookup:
        if not self._ready.is_set():
            return NOT_READY
        with self._lock:
            return self._bindings.get(namespace)

    # --- applying what the pure part says ---

    @property
    def resource_version(self) -> str | None:
        return self._resource_version

    def replace(self, namespaces: Mapping[str, LabelBinding], resource_version: str | None) -> None:
        """Install the result of a complete list; the first one makes the cache ready."""
        bound = {name: lb.binding for name, lb in namespaces.items() if lb.binding is not None}
        for name, lb in namespaces.items():
            if lb.problem:
                log.warning("namespace %s is not bound: %s", name, lb.problem)
        with self._lock:
            self._bindings = bound
            self._resource_version = resource_version
        if not self._ready.is_set():
            log.info("namespace cache synced: %d of %d namespaces bound", len(bound), len(namespaces))
        self._ready.set()

    def apply(self, change: Change) -> None:
        """Apply one interpreted event (Relist is the loop's business, not the store's)."""
        if isinstance(change, Upsert):
            if change.labels.problem:
                log.warning("namespace %s is not bound: %s", change.name, change.labels.problem)
            with self._lock:
                if change.labels.binding is None:
                    self._bindings.pop(change.name, None)
                else:
                    self._bindings[change.name] = change.labels.binding
                self._resource_version = change.resource_version or self._resource_version
        elif isinstance(change, Delete):
            with self._lock:
                self._bindings.pop(change.name, None)
                self._resource_version = change.resource_version or self._resource_version
        elif isinstance(change, Bookmark):
            with self._lock:
                self._resource_version = change.resource_version

    # --- the loop ---

    def list_all(self) -> None:
        """List every namespace (page by page) and install the result."""
        namespaces: dict[str, LabelBinding] = {}
        token: str | None = None
        resource_version: str | None = None
        while True:
            page = parse_list_page(self._api.list_page(limit=self._settings.page_size, continue_token=token))
            namespaces.update(page.namespaces)
            # The first page's resourceVersion is the snapshot the whole paged list belongs to.
            resource_version = resource_version or page.resource_version
            token = page.continue_token
            if token is None or self._stop.is_set():
                break
        if self._stop.is_set():
            return
        if resource_version is None:
            raise WatchError("namespace list without a resourceVersion")
        self.replace(namespaces, resource_version)

    def watch_once(self) -> None:
        """One watch request from the current resourceVersion, applying events until it ends."""
        rv = self._resource_version
        if rv is None:
            raise ResourceExpired()
        started, events = time.monotonic(), 0
        stream = self._api.watch(resource_version=rv, timeout_seconds=self._settings.watch_timeout_seconds)
        with contextlib.closing(stream):
            for event in stream:
                if self._stop.is_set():
                    return
                change = interpret_event(event)
                if isinstance(change, Relist):
                    raise ResourceExpired()
                self.apply(change)
                events += 1
        if events == 0 and time.monotonic() - started < self._settings.min_watch_seconds:
            raise WatchError("watch ended at once without events")

    def run(self) -> None:
        """List, then watch until stopped; re-list on 410 Gone, back off on errors."""
        failures = 0
        while not self._stop.is_set():
            try:
                self.list_all()
                failures = 0
                while not self._stop.is_set():
                    self.watch_once()
            except ResourceExpired:
                log.info("namespace watch expired (410 Gone); listing again")
            except Exception as exc:
                if self._stop.is_set():
                    break
                delay = backoff_delay(
                    failures,
                    initial=self._settings.backoff_initial_seconds,
                    maximum=self._settings.backoff_max_seconds,
                )
                failures += 1
                status = getattr(exc, "status", None)
                # Type and status only: an exception's text may quote a whole response body.
                log.warning(
                    "namespace list/watch failed (%s%s); retrying in %.1f s",
                    type(exc).__name__,
                    f", status {status}" if isinstance(status, int) else "",
                    delay,
                )
                self._stop.wait(delay)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("namespace cache already started")
        self._stop.clear()
        # A daemon thread: a request blocked in the kubernetes client never holds the process open.
        self._thread = threading.Thread(target=self.run, name="namespace-cache", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the loop; True when the thread has ended within ``timeout``."""
        self._stop.set()
        self._api.interrupt()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("namespace cache thread did not stop within %.1f s", timeout)
                return False
        self._api.close()
        return True


# ---------------------------------------------------------------------------------------------
# The kubernetes client: the only part that does HTTP.
# ---------------------------------------------------------------------------------------------


class KubernetesNamespaceApi:
    """NamespaceApi on the official ``kubernetes`` client, with raw JSON (no model deserialisation)."""

    def __init__(
        self, api_client: k8s_client.ApiClient, *, connect_timeout: float = 10.0, read_timeout: float = 60.0
    ) -> None:
        self._api_client = api_client
        self._core = k8s_client.CoreV1Api(api_client)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._active: urllib3.HTTPResponse | None = None
        self._interrupted = False
        self._active_lock = threading.Lock()

    @classmethod
    def from_credentials(cls, credentials: ClusterCredentials) -> KubernetesNamespaceApi:
        """Load the credentials once (raises kubernetes.config.ConfigException if they are unusable)."""
        return cls(k8s_client.ApiClient(client_configuration(credentials)))

    def list_page(self, *, limit: int, continue_token: str | None) -> Mapping[str, Any]:
        """GET: /api/v1/namespaces"""
        try:
            # With _preload_content=False the client returns the raw urllib3 response (non-2xx raise).
            response = cast(
                urllib3.HTTPResponse,
                self._core.list_namespace(
                    limit=limit,
                    _continue=continue_token,
                    _preload_content=False,
                    _request_timeout=(self._connect_timeout, self._read_timeout),
                ),
            )
        except ApiException as exc:
            if exc.status == HTTP_GONE:
                raise ResourceExpired() from None
            raise
        try:
            document = json.loads(response.data)
        finally:
            response.release_conn()
        if not isinstance(document, Mapping):
            raise WatchError("namespace list is not an object")
        return document

    def watch(
        self, *, resource_version: str, timeout_seconds: int
    ) -> Generator[Mapping[str, Any], None, None]:
        """GET: /api/v1/namespaces?watch=true"""
        try:
            response = cast(
                urllib3.HTTPResponse,
                self._core.list_namespace(
                    watch=True,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=timeout_seconds,
                    _preload_content=False,
                    # The server ends the watch after timeout_seconds; the read timeout is a safety net for a
                    # connection that silently died.
                    _request_timeout=(self._connect_timeout, timeout_seconds + self._read_timeout),
                ),
            )
        except ApiException as exc:
            if exc.status == HTTP_GONE:
                raise ResourceExpired() from None
            raise
        with self._active_lock:
            self._active = response
            if self._interrupted:  # stop() came while the request was being sent
                response.shutdown()
        try:
            lines: Iterator[str] = _iter_resp_lines(response)
            for line in lines:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    raise WatchError("watch sent a line that is not JSON") from None
                if not isinstance(event, Mapping):
                    raise WatchError("watch event is not an object")
                yield event
        finally:
            with self._active_lock:
                self._active = None
            # close() first: a watch left half-read must not go back into the pool, or the next request
            # on that connection reads the rest of the stream as its status line.
            response.close()
            response.release_conn()

    def interrupt(self) -> None:
        with self._active_lock:
            self._interrupted = True
            if self._active is not None:
                # urllib3 >= 2.3: shuts the socket down so that a read blocked in another thread returns.
                self._active.shutdown()

    def close(self) -> None:
        close: Callable[[], None] = self._api_client.close
        close()
