"""A stand-in for the Kubernetes API server's list endpoints and PolicyReport writes, on 127.0.0.1.

It speaks the real wire format, so that the official ``kubernetes`` client, reached through a real kubeconfig
file, does every request as it would against a cluster:

- lists of namespaces and of namespaced kinds, paginated with ``limit`` and opaque ``continue`` tokens
  (``410 Expired`` for a token when told to), ``fieldSelector`` on ``metadata.name`` and ``status.phase``
  (``=`` and ``!=``; any other field is refused with 400 as the API server does), list items without
  ``kind``/``apiVersion`` as the API server sends them;
- ``PartialObjectMetadataList`` when the Accept header asks for it. A Secret list requested WITHOUT it is
  recorded in ``full_secret_requests`` and answered with 500: the ``kube_api`` fixtures fail the test;
- bearer-token authentication (401), refusals per (verb, resource, namespace) as 403 ``Status`` objects with
  the API server's own message shape (it names the user, so tests can check it is never quoted);
- ``wgpolicyk8s.io/v1alpha2`` PolicyReports: create (409 when it exists), get (404), and replace conditioned
  on ``metadata.resourceVersion`` (409 on a stale one, 422 without one, as for custom resources).

The server runs in its own thread and event loop, so synchronous code (a CLI's ``main``) can call it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

TOKEN: Final = "stand-in-token"
USER: Final = "system:serviceaccount:gtc-system:gtc-audit"
METADATA_ONLY: Final = ("as=PartialObjectMetadataList", "g=meta.k8s.io", "v=v1")
# (apiVersion, plural) -> kind, for every list the stand-in serves.
KINDS: Final = {
    ("v1", "namespaces"): "Namespace",
    ("v1", "pods"): "Pod",
    ("v1", "secrets"): "Secret",
    ("apps/v1", "deployments"): "Deployment",
    ("apps/v1", "statefulsets"): "StatefulSet",
    ("apps/v1", "daemonsets"): "DaemonSet",
    ("apps/v1", "replicasets"): "ReplicaSet",
    ("batch/v1", "jobs"): "Job",
    ("batch/v1", "cronjobs"): "CronJob",
    ("wgpolicyk8s.io/v1alpha2", "policyreports"): "PolicyReport",
}
REPORTS: Final = "wgpolicyk8s.io/v1alpha2"
SELECTABLE_FIELDS: Final = frozenset({"metadata.name", "metadata.namespace", "status.phase"})


def write_kubeconfig(path: Path, server: str, token: str, *, context: str = "stand-in") -> Path:
    """A kubeconfig with one cluster, one user (a bearer token) and one context, made current."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": context, "cluster": {"server": server}}],
                "users": [{"name": "tester", "user": {"token": token}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": "tester"}}],
                "current-context": context,
            }
        )
    )
    return path


def status(code: int, reason: str, message: str, *, kind: str | None = None) -> web.Response:
    """A metav1.Status error body, as the API server sends it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if kind is not None:
        body["details"] = {"kind": kind}
    return web.Response(body=orjson.dumps(body), status=code, content_type="application/json")


@dataclass(frozen=True)
class Seen:
    """One request the stand-in answered."""

    method: str
    path: str
    query: dict[str, str]
    accept: str


def _field_terms(selector: str) -> list[tuple[str, bool, str]]:
    terms = []
    for term in filter(None, selector.split(",")):
        negated = "!=" in term
        field, _, value = term.partition("!=" if negated else "=")
        terms.append((field.strip(), negated, value.strip().removeprefix("=")))
    return terms


def _field(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else ""


class KubeApiStandIn:
    def __init__(self, *, token: str = TOKEN) -> None:
        self.token = token
        self.namespaces: list[dict[str, Any]] = []
        # (apiVersion, plural) -> namespace -> objects
        self.objects: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
        self.forbidden: set[tuple[str, str, str | None]] = set()  # (verb, plural, namespace or None: all)
        self.expire_continue = False
        self.requests: list[Seen] = []
        self.full_secret_requests: list[str] = []
        self.reports: dict[tuple[str, str], dict[str, Any]] = {}
        self._version = 1000
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- content ---

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.namespaces.append(
            {"metadata": {"name": name, "uid": str(uuid.uuid4()), "labels": dict(labels or {})}}
        )

    def add(self, api_version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store a namespaced object (metadata.namespace required); a uid is added when it has none."""
        assert (api_version, plural) in KINDS, (api_version, plural)
        stored = copy.deepcopy(obj)
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("resourceVersion", self._next_version())
        self.objects.setdefault((api_version, plural), {}).setdefault(meta["namespace"], []).append(stored)
        return stored

    def add_all(self, api_version: str, plural: str, objects: Iterable[dict[str, Any]]) -> None:
        for obj in objects:
            self.add(api_version, plural, obj)

    def lists_of(self, plural: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == "GET" and seen.path.endswith("/" + plural)]

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # --- serving ---

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, *, token: str | None = None, context: str = "stand-in") -> Path:
        return write_kubeconfig(path, self.url, token or self.token, context=context)

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_get("/api/v1/namespaces", self._list_namespaces)
        app.router.add_get("/api/v1/namespaces/{namespace}/{plural}", self._list_core)
        app.router.add_get("/apis/{group}/{version}/namespaces/{namespace}/{plural}", self._list_group)
        base = f"/apis/{REPORTS}/namespaces/{{namespace}}/policyreports"
        app.router.add_post(base, self._create_report)
        app.router.add_get(base + "/{name}", self._get_report)
        app.router.add_put(base + "/{name}", self._replace_report)
        app.router.add_delete(base + "/{name}", self._delete_report)
        app.router.add_get(f"/apis/{REPORTS}/policyreports", self._list_reports)
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(
            Seen(request.method, request.path, dict(request.query), request.headers.get("Accept", ""))
        )
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    def _refused(self, verb: str, plural: str, group: str, namespace: str | None) -> web.Response | None:
        if (verb, plural, namespace) not in self.forbidden and (verb, plural, None) not in self.forbidden:
            return None
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        message = (
            f'{plural} is forbidden: User "{USER}" cannot {verb} resource "{plural}" '
            f'in API group "{group}"{where}'
        )
        return status(403, "Forbidden", message, kind=plural)

    async def _list_namespaces(self, request: web.Request) -> web.Response:
        refused = self._refused("list", "namespaces", "", None)
        return refused or self._page(request, "v1", "namespaces", self.namespaces)

    async def _list_core(self, request: web.Request) -> web.Response:
        return self._list(request, "v1", "")

    async def _list_group(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        return self._list(request, f"{group}/{version}", group)

    def _list(self, request: web.Request, api_version: str, group: str) -> web.Response:
        plural, namespace = request.match_info["plural"], request.match_info["namespace"]
        if (api_version, plural) not in KINDS:
            return status(404, "NotFound", "the server could not find the requested resource")
        refused = self._refused("list", plural, group, namespace)
        if refused is not None:
            return refused
        if plural == "secrets" and not self._metadata_only(request):
            self.full_secret_requests.append(str(request.rel_url))
            return status(500, "InternalError", "stand-in: a full Secret list was requested")
        items = self.objects.get((api_version, plural), {}).get(namespace, [])
        return self._page(request, api_version, plural, items)

    @staticmethod
    def _metadata_only(request: web.Request) -> bool:
        accept = request.headers.get("Accept", "").replace(" ", "")
        return all(part in accept.split(";") for part in METADATA_ONLY)

    def _page(
        self, request: web.Request, api_version: str, plural: str, items: list[dict[str, Any]]
    ) -> web.Response:
        selector = request.query.get("fieldSelector", "")
        terms = _field_terms(selector)
        for field, _, _ in terms:
            if field not in SELECTABLE_FIELDS:
                return status(400, "BadRequest", f'field label not supported: "{field}"')
        matching = [
            item
            for item in items
            if all((_field(item, field) == value) != negated for field, negated, value in terms)
        ]
        list_key = f"{request.path}?{selector}"
        offset = 0
        token = request.query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token))
                offset = int(state["offset"])
                if state["key"] != list_key:
                    raise ValueError("another list")
            except (ValueError, KeyError, TypeError):
                return status(400, "BadRequest", "continue key is not valid")
            if self.expire_continue:
                return status(410, "Expired", "The provided continue parameter is too old")
        limit = int(request.query.get("limit", "0") or "0")
        end = offset + limit if limit > 0 else len(matching)
        page = matching[offset:end]
        list_meta: dict[str, Any] = {"resourceVersion": str(self._version)}
        if end < len(matching):
            list_meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"key": list_key, "offset": end}).encode()
            ).decode()
            list_meta["remainingItemCount"] = len(matching) - end
        if self._metadata_only(request):
            body = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": list_meta,
                "items": [
                    {
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": item["metadata"],
                    }
                    for item in page
                ],
            }
            content_type = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        else:
            # List items carry no kind/apiVersion on the wire: the list's own say what they are.
            items_out = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in page]
            kind = KINDS[(api_version, plural)]
            body = {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": list_meta,
                "items": items_out,
            }
            content_type = "application/json"
        response = web.Response(body=orjson.dumps(body), status=200)
        response.headers["Content-Type"] = content_type
        return response

    # --- PolicyReports ---

    async def _create_report(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        refused = self._refused("create", "policyreports", "wgpolicyk8s.io", namespace)
        if refused is not None:
            return refused
        body = await request.json()
        name = body["metadata"]["name"]
        if (namespace, name) in self.reports:
            return status(409, "AlreadyExists", f'policyreports.wgpolicyk8s.io "{name}" already exists')
        body["metadata"].update(
            namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=self._next_version()
        )
        self.reports[(namespace, name)] = body
        return web.json_response(body, status=201)

    async def _get_report(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        refused = self._refused("get", "policyreports", "wgpolicyk8s.io", namespace)
        if refused is not None:
            return refused
        if (namespace, name) not in self.reports:
            return status(404, "NotFound", f'policyreports.wgpolicyk8s.io "{name}" not found')
        return web.json_response(self.reports[(namespace, name)])

    async def _replace_report(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        refused = self._refused("update", "policyreports", "wgpolicyk8s.io", namespace)
        if refused is not None:
            return refused
        current = self.reports.get((namespace, name))
        if current is None:
            return status(404, "NotFound", f'policyreports.wgpolicyk8s.io "{name}" not found')
        body = await request.json()
        version = body.get("metadata", {}).get("resourceVersion")
        if not version:
            return status(
                422,
                "Invalid",
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            )
        if version != current["metadata"]["resourceVersion"]:
            return status(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version",
            )
        body["metadata"].update(uid=current["metadata"]["uid"], resourceVersion=self._next_version())
        self.reports[(namespace, name)] = body
        return web.json_response(body)

    async def _delete_report(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        refused = self._refused("delete", "policyreports", "wgpolicyk8s.io", namespace)
        if refused is not None:
            return refused
        if self.reports.pop((namespace, name), None) is None:
            return status(404, "NotFound", f'policyreports.wgpolicyk8s.io "{name}" not found')
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})

    async def _list_reports(self, request: web.Request) -> web.Response:
        """All namespaces; labelSelector as key=value terms (all must match)."""
        refused = self._refused("list", "policyreports", "wgpolicyk8s.io", None)
        if refused is not None:
            return refused
        terms = [
            term.partition("=")[::2] for term in request.query.get("labelSelector", "").split(",") if term
        ]
        items = [
            report
            for report in self.reports.values()
            if all(report["metadata"].get("labels", {}).get(key) == value for key, value in terms)
        ]
        return self._page(request, REPORTS, "policyreports", items)

    # --- lifecycle ---

    def start(self) -> KubeApiStandIn:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        async def serve() -> None:
            self._runner = web.AppRunner(self._app(), handle_signals=False, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(self._runner.addresses[0][1])

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="kube-api-stand-in", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the Kubernetes API stand-in did not start")
        return self

    def stop(self) -> None:
        loop, runner, thread = self._loop, self._runner, self._thread
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> KubeApiStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
