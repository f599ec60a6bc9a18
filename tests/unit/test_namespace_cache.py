"""Namespace bindings from labels: pure event interpretation, the cache loop, the kubernetes client adapter.

The adapter is exercised against a tiny fake of the Kubernetes API (list + chunked watch of Namespaces) on
127.0.0.1, reached through a real kubeconfig file, so the real ``kubernetes`` client does the HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gtc_admission import constants as c
from gtc_admission.bindings import NOT_READY, LayeredBindings, StaticBindings
from gtc_admission.config import NamespaceBinding
from gtc_admission.namespace_cache import (
    Bookmark,
    CacheSettings,
    ClusterCredentials,
    Delete,
    KubernetesNamespaceApi,
    LabelBinding,
    NamespaceCache,
    Relist,
    ResourceExpired,
    Upsert,
    WatchError,
    backoff_delay,
    binding_from_labels,
    cluster_credentials_from_env,
    interpret_event,
    parse_list_page,
)
from tests.support.kube_api import write_kubeconfig

FAST = CacheSettings(backoff_initial_seconds=0.01, backoff_max_seconds=0.05, min_watch_seconds=0.2)


def ns(name: str, labels: Mapping[str, str] | None = None, rv: str = "1") -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "metadata": {"name": name, "resourceVersion": rv, "labels": dict(labels or {})},
    }


def labels(env: str | None = None, tenant: str | None = None, team: str | None = None) -> dict[str, str]:
    out = {"kubernetes.io/metadata.name": "x"}
    for key, value in ((c.LABEL_ENV, env), (c.LABEL_TENANT, tenant), (c.LABEL_TEAM, team)):
        if value is not None:
            out[key] = value
    return out


def namespace_list(*items: dict[str, Any], rv: str = "100", token: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": rv}
    if token:
        meta["continue"] = token
    return {"kind": "NamespaceList", "apiVersion": "v1", "metadata": meta, "items": list(items)}


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


async def async_wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"KUBECONFIG": ""}, None),
        ({"KUBECONFIG": "/home/me/.kube/config"}, ClusterCredentials(False, "/home/me/.kube/config")),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, ClusterCredentials(True)),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBECONFIG": "/k"}, ClusterCredentials(True)),
    ],
)
def test_cluster_credentials_from_env(environ: dict[str, str], expected: ClusterCredentials | None) -> None:
    """In-cluster wins, then KUBECONFIG, else there is no cluster source."""
    assert cluster_credentials_from_env(environ) == expected


def test_in_cluster_without_service_account_files_fails_at_start() -> None:
    """Claiming in-cluster credentials outside a pod is an error at start-up, not a silent fallback."""
    from kubernetes.config import ConfigException

    with pytest.raises(ConfigException):
        KubernetesNamespaceApi.from_credentials(ClusterCredentials(in_cluster=True))


# --------------------------------------------------------------------------------------------
# Pure: labels and events
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "binding", "problem"),
    [
        (labels(), None, None),
        (labels("prod", "acme", "core"), NamespaceBinding("prod", "acme", "core"), None),
        (labels("prod", "acme"), NamespaceBinding("prod", "acme", c.DEFAULT_TEAM), None),
        (labels("prod", "acme", ""), NamespaceBinding("prod", "acme", c.DEFAULT_TEAM), None),
        (labels("staging-eu", "acme"), NamespaceBinding("staging-eu", "acme", c.DEFAULT_TEAM), None),
        (labels("prod"), None, c.LABEL_TENANT),
        (labels("prod", ""), None, c.LABEL_TENANT),
        (labels("prod", "Acme_Corp"), None, c.LABEL_TENANT),
        (labels("prod", "acme", "Core.Team"), None, c.LABEL_TEAM),
        (labels(None, "acme"), None, c.LABEL_ENV),
    ],
)
def test_binding_from_labels(
    given: dict[str, str], binding: NamespaceBinding | None, problem: str | None
) -> None:
    """env + tenant bind (team defaults to 'default'); partial or invalid labels bind nothing, with reason."""
    result = binding_from_labels(given)
    assert result.binding == binding
    if problem is None:
        assert result.problem is None
    else:
        assert result.problem is not None and problem in result.problem


def test_interpret_added_and_modified() -> None:
    """ADDED and MODIFIED become an Upsert carrying the binding and the resourceVersion."""
    for kind in ("ADDED", "MODIFIED"):
        change = interpret_event({"type": kind, "object": ns("acme-prod", labels("prod", "acme"), rv="7")})
        assert change == Upsert("acme-prod", LabelBinding(NamespaceBinding("prod", "acme")), "7")


def test_interpret_unlabelled_namespace() -> None:
    """A namespace without our labels is an Upsert to 'bound to nothing' (so a removed label unbinds)."""
    change = interpret_event({"type": "MODIFIED", "object": ns("kube-system", rv="8")})
    assert change == Upsert("kube-system", LabelBinding(None), "8")


def test_interpret_deleted() -> None:
    """DELETED removes the namespace."""
    assert interpret_event({"type": "DELETED", "object": ns("gone", rv="9")}) == Delete("gone", "9")


def test_interpret_bookmark() -> None:
    """BOOKMARK only moves the resourceVersion on (its object is a stub without a name)."""
    event = {"type": "BOOKMARK", "object": {"kind": "Namespace", "metadata": {"resourceVersion": "12345"}}}
    assert interpret_event(event) == Bookmark("12345")


def test_interpret_error_410_means_relist() -> None:
    """An ERROR event with code 410 (resourceVersion too old) asks for a re-list."""
    status = {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}
    assert interpret_event({"type": "ERROR", "object": status}) == Relist()


@pytest.mark.parametrize(
    "event",
    [
        {"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": "InternalError"}},
        {"type": "ERROR", "object": "not a status"},
        {"type": "SURPRISE", "object": ns("x")},
        {"type": "ADDED", "object": "nope"},
        {"type": "ADDED", "object": {"metadata": {"labels": {}}}},
        {"type": "DELETED", "object": {}},
        {"type": "BOOKMARK", "object": {"metadata": {}}},
        {},
    ],
)
def test_interpret_bad_events_raise(event: dict[str, Any]) -> None:
    """Other errors and malformed events raise WatchError (the loop backs off and re-lists)."""
    with pytest.raises(WatchError):
        interpret_event(event)


def test_parse_list_page() -> None:
    """A list page gives every namespace's binding, the snapshot's resourceVersion and the continue token."""
    page = parse_list_page(namespace_list(ns("a", labels("prod", "acme")), ns("b"), rv="55", token="tok"))
    assert page.namespaces == (
        ("a", LabelBinding(NamespaceBinding("prod", "acme"))),
        ("b", LabelBinding(None)),
    )
    assert page.resource_version == "55"
    assert page.continue_token == "tok"
    empty = parse_list_page({"metadata": {"resourceVersion": "1"}, "items": None})
    assert empty.namespaces == () and empty.continue_token is None


def test_parse_list_page_rejects_garbage() -> None:
    """A list whose items are not a list is an error, not an empty cluster."""
    with pytest.raises(WatchError):
        parse_list_page({"items": "everything"})


def test_backoff_delay() -> None:
    """Doubling from the initial delay, capped at the maximum."""
    delays = [backoff_delay(n, initial=0.5, maximum=30.0) for n in range(10)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(delays) == 30.0
    assert backoff_delay(10_000, initial=0.5, maximum=30.0) == 30.0


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class NoApi:
    def list_page(self, *, limit: int, continue_token: str | None) -> Mapping[str, Any]:
        raise AssertionError("not called")

    def watch(
        self, *, resource_version: str, timeout_seconds: int
    ) -> Generator[Mapping[str, Any], None, None]:
        raise AssertionError("not called")

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_not_ready_until_first_list() -> None:
    """Before the first list completes every lookup answers NOT_READY."""
    cache = NamespaceCache(NoApi())
    assert cache.ready is False
    assert cache.lookup("acme-prod") is NOT_READY
    cache.replace({"acme-prod": LabelBinding(NamespaceBinding("prod", "acme"))}, "10")
    assert cache.ready is True
    assert cache.lookup("acme-prod") == NamespaceBinding("prod", "acme")
    assert cache.lookup("other") is None


def test_apply_changes() -> None:
    """Upserts bind/unbind, deletes remove, bookmarks move the resourceVersion on."""
    cache = NamespaceCache(NoApi())
    cache.replace({}, "1")
    cache.apply(Upsert("a", LabelBinding(NamespaceBinding("prod", "acme")), "2"))
    assert cache.lookup("a") == NamespaceBinding("prod", "acme")
    cache.apply(Upsert("a", LabelBinding(NamespaceBinding("prod", "acme", "core")), "3"))
    assert cache.lookup("a") == NamespaceBinding("prod", "acme", "core")
    cache.apply(Upsert("a", LabelBinding(None), "4"))
    assert cache.lookup("a") is None
    cache.apply(Upsert("b", LabelBinding(NamespaceBinding("dev", "acme")), "5"))
    cache.apply(Delete("b", "6"))
    assert cache.lookup("b") is None
    cache.apply(Bookmark("99"))
    assert cache.resource_version == "99"


def test_partial_labels_are_logged_by_name_only(caplog: pytest.LogCaptureFixture) -> None:
    """A namespace with env but no tenant is logged (name and label key), never with label values."""
    cache = NamespaceCache(NoApi())
    cache.replace({}, "1")
    with caplog.at_level(logging.WARNING, logger="gtc_admission.namespace_cache"):
        cache.apply(interpret_event({"type": "ADDED", "object": ns("half", labels("CANARY-env-9f3a"))}))
    assert cache.lookup("half") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("half" in m and c.LABEL_TENANT in m for m in messages)
    assert all("CANARY" not in m for m in messages)


def test_layered_static_bindings_win_and_not_ready_only_for_unbound() -> None:
    """With static bindings first, a not-ready cache only matters for namespaces the config does not bind."""
    cache = NamespaceCache(NoApi())
    layered = LayeredBindings([StaticBindings({"acme-prod": NamespaceBinding("prod", "acme")}), cache])
    assert layered.lookup("acme-prod") == NamespaceBinding("prod", "acme")
    assert layered.lookup("elsewhere") is NOT_READY
    assert layered.ready is False
    cache.replace({"elsewhere": LabelBinding(NamespaceBinding("dev", "beta"))}, "1")
    assert layered.lookup("elsewhere") == NamespaceBinding("dev", "beta")
    assert layered.ready is True


# --------------------------------------------------------------------------------------------
# The loop against a scripted API
# --------------------------------------------------------------------------------------------


class ScriptedApi:
    """Lists and watches play a script; when the watch script runs out, a watch blocks until interrupted."""

    def __init__(self, lists: list[Any], watches: list[Any]) -> None:
        self.lists = list(lists)
        self.watches = list(watches)
        self.list_calls = 0
        self.watch_rvs: list[str] = []
        self.interrupted = threading.Event()
        self.closed = False

    def list_page(self, *, limit: int, continue_token: str | None) -> Mapping[str, Any]:
        self.list_calls += 1
        item = self.lists.pop(0) if len(self.lists) > 1 else self.lists[0]
        if isinstance(item, Exception):
            raise item
        assert isinstance(item, dict)
        return item

    def watch(
        self, *, resource_version: str, timeout_seconds: int
    ) -> Generator[Mapping[str, Any], None, None]:
        self.watch_rvs.append(resource_version)
        if not self.watches:
            self.interrupted.wait(10)
            return
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        yield from script

    def interrupt(self) -> None:
        self.interrupted.set()

    def close(self) -> None:
        self.closed = True


@contextlib.contextmanager
def running(cache: NamespaceCache) -> Iterator[NamespaceCache]:
    cache.start()
    try:
        yield cache
    finally:
        assert cache.stop(5.0), "the cache thread did not stop"


def test_loop_lists_then_watches_from_the_list_version() -> None:
    """The watch starts at the list's resourceVersion; events update lookups; stop ends the thread."""
    api = ScriptedApi(
        lists=[namespace_list(ns("a", labels("prod", "acme")), rv="100")],
        watches=[[{"type": "ADDED", "object": ns("b", labels("dev", "beta"), rv="101")}]],
    )
    with running(NamespaceCache(api, FAST)) as cache:
        wait_until(lambda: cache.lookup("b") == NamespaceBinding("dev", "beta"))
        assert cache.lookup("a") == NamespaceBinding("prod", "acme")
        wait_until(lambda: len(api.watch_rvs) == 2)
        assert api.watch_rvs == ["100", "101"]
    assert api.closed


def test_loop_pages_through_a_long_list() -> None:
    """A list with a continue token is followed to the end before the cache is ready."""

    class PagedApi(ScriptedApi):
        def list_page(self, *, limit: int, continue_token: str | None) -> Mapping[str, Any]:
            self.list_calls += 1
            if continue_token is None:
                return namespace_list(ns("a", labels("prod", "acme")), rv="100", token="page-2")
            assert continue_token == "page-2"
            return namespace_list(ns("z", labels("prod", "zeta")), rv="100")

    api = PagedApi(lists=[None], watches=[])
    with running(NamespaceCache(api, FAST)) as cache:
        wait_until(lambda: cache.ready)
        assert cache.lookup("a") == NamespaceBinding("prod", "acme")
        assert cache.lookup("z") == NamespaceBinding("prod", "zeta")
        assert api.list_calls == 2


def test_loop_relists_on_410() -> None:
    """A 410 ERROR event makes the loop list again; the new list replaces the old state."""
    api = ScriptedApi(
        lists=[
            namespace_list(ns("old", labels("prod", "acme")), rv="100"),
            namespace_list(ns("new"), rv="200"),
        ],
        watches=[[{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}]],
    )
    with running(NamespaceCache(api, FAST)) as cache:
        wait_until(lambda: api.list_calls == 2 and len(api.watch_rvs) == 2)
        assert cache.lookup("old") is None
        assert api.watch_rvs == ["100", "200"]


def test_loop_relists_when_the_watch_request_gets_410() -> None:
    """A 410 on the watch request itself (ResourceExpired) also re-lists."""
    api = ScriptedApi(
        lists=[namespace_list(rv="100"), namespace_list(rv="300")],
        watches=[ResourceExpired()],
    )
    with running(NamespaceCache(api, FAST)) as _cache:
        wait_until(lambda: api.watch_rvs == ["100", "300"])


def test_loop_backs_off_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    """A failing list is retried with back-off; the log names the error type, never its text."""
    api = ScriptedApi(
        lists=[RuntimeError("CANARY-9f3a response body"), namespace_list(ns("a", labels("prod", "acme")))],
        watches=[],
    )
    with (
        caplog.at_level(logging.WARNING, logger="gtc_admission.namespace_cache"),
        running(NamespaceCache(api, FAST)) as cache,
    ):
        wait_until(lambda: cache.ready)
        assert cache.lookup("a") == NamespaceBinding("prod", "acme")
    messages = [r.getMessage() for r in caplog.records]
    assert any("RuntimeError" in m and "retrying" in m for m in messages)
    assert all("CANARY" not in m for m in messages)


def test_loop_stays_ready_and_keeps_bindings_while_failing() -> None:
    """After a watch error the old bindings keep answering while the loop backs off and re-lists."""
    slow = CacheSettings(backoff_initial_seconds=0.3, backoff_max_seconds=0.3, min_watch_seconds=0.2)
    api = ScriptedApi(
        lists=[namespace_list(ns("a", labels("prod", "acme")), rv="100")],
        watches=[[{"type": "ERROR", "object": {"kind": "Status", "code": 500}}]],
    )
    with running(NamespaceCache(api, slow)) as cache:
        wait_until(lambda: len(api.watch_rvs) == 1 and cache.ready)
        assert cache.lookup("a") == NamespaceBinding("prod", "acme")
        wait_until(lambda: api.list_calls == 2)


def test_loop_does_not_spin_on_empty_watches() -> None:
    """A watch that ends at once without events counts as a failure (back-off, re-list), not a busy loop."""
    api = ScriptedApi(lists=[namespace_list(rv="100")], watches=[[], [], []])
    with running(NamespaceCache(api, FAST)) as _cache:
        wait_until(lambda: api.list_calls >= 3)
        time.sleep(0.1)
        assert api.list_calls < 20


def test_stop_interrupts_a_blocked_watch() -> None:
    """stop() returns promptly even while the watch is blocked waiting for events."""
    api = ScriptedApi(lists=[namespace_list(rv="100")], watches=[])
    cache = NamespaceCache(api, FAST)
    cache.start()
    wait_until(lambda: len(api.watch_rvs) == 1)
    started = time.monotonic()
    assert cache.stop(5.0)
    assert time.monotonic() - started < 2.0


# --------------------------------------------------------------------------------------------
# The kubernetes client adapter against a fake API server on 127.0.0.1
# --------------------------------------------------------------------------------------------


class FakeKubernetes:
    """GET /api/v1/namespaces: a list, or a chunked watch that streams queued events."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.rv = "100"
        self.events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.list_calls = 0
        self.watch_calls: list[dict[str, str]] = []
        self.tokens: list[str] = []
        self.watch_status = 200

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.tokens.append(request.headers.get("Authorization", ""))
        if request.query.get("watch") != "true":
            self.list_calls += 1
            return web.json_response(namespace_list(*self.items, rv=self.rv))
        self.watch_calls.append(dict(request.query))
        if self.watch_status != 200:
            status = {"kind": "Status", "code": self.watch_status, "reason": "Expired"}
            self.watch_status = 200
            return web.json_response(status, status=410)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        while True:
            event = await self.events.get()
            if event is None:
                break
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response


@pytest.fixture
async def fake_kubernetes(tmp_path: Path) -> Any:
    fake = FakeKubernetes()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{server.port}", "fake-token")
    try:
        yield fake, kubeconfig
    finally:
        fake.events.put_nowait(None)
        await server.close()


async def test_adapter_lists_and_watches_a_real_http_api(fake_kubernetes: Any) -> None:
    """Through a kubeconfig, the real kubernetes client lists, watches, applies events and re-lists on 410."""
    fake, kubeconfig = fake_kubernetes
    fake.items = [ns("acme-prod", labels("prod", "acme", "core"))]
    api = KubernetesNamespaceApi.from_credentials(
        ClusterCredentials(in_cluster=False, kubeconfig=str(kubeconfig))
    )
    cache = NamespaceCache(api, FAST)
    cache.start()
    try:
        await async_wait_until(lambda: cache.ready and len(fake.watch_calls) == 1)
        assert cache.lookup("acme-prod") == NamespaceBinding("prod", "acme", "core")
        assert fake.tokens[0] == "Bearer fake-token"
        query = fake.watch_calls[0]
        assert query["resourceVersion"] == "100"
        assert query["allowWatchBookmarks"] == "true"

        await fake.events.put({"type": "ADDED", "object": ns("beta-dev", labels("dev", "beta"), rv="101")})
        await async_wait_until(lambda: cache.lookup("beta-dev") == NamespaceBinding("dev", "beta"))
        await fake.events.put(
            {"type": "MODIFIED", "object": ns("acme-prod", labels("prod", "acme", "edge"), "102")}
        )
        await async_wait_until(lambda: cache.lookup("acme-prod") == NamespaceBinding("prod", "acme", "edge"))
        await fake.events.put({"type": "DELETED", "object": ns("beta-dev", rv="103")})
        await async_wait_until(lambda: cache.lookup("beta-dev") is None)

        # The watch expires: an ERROR 410 event, then the cache lists again and watches from the new version.
        fake.items, fake.rv = [ns("gamma", labels("prod", "gamma"))], "500"
        await fake.events.put(
            {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
        )
        await async_wait_until(lambda: fake.list_calls == 2 and len(fake.watch_calls) == 2)
        assert fake.watch_calls[1]["resourceVersion"] == "500"
        assert cache.lookup("gamma") == NamespaceBinding("prod", "gamma")
        assert cache.lookup("acme-prod") is None
    finally:
        started = time.monotonic()
        stopped = await asyncio.to_thread(cache.stop, 5.0)
    assert stopped
    assert time.monotonic() - started < 3.0, "stop must interrupt the blocked watch"


async def test_adapter_maps_410_on_the_watch_request(fake_kubernetes: Any) -> None:
    """An HTTP 410 answer to the watch request re-lists, like an ERROR 410 event."""
    fake, kubeconfig = fake_kubernetes
    fake.watch_status = 410
    api = KubernetesNamespaceApi.from_credentials(
        ClusterCredentials(in_cluster=False, kubeconfig=str(kubeconfig))
    )
    cache = NamespaceCache(api, FAST)
    cache.start()
    try:
        await async_wait_until(lambda: fake.list_calls == 2 and len(fake.watch_calls) == 2)
    finally:
        assert await asyncio.to_thread(cache.stop, 5.0)
