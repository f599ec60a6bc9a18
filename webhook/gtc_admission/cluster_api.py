"""The cluster as ``gtc-admission audit`` reads it: paged lists through the official ``kubernetes`` client.

Only this module talks HTTP. Every list is paginated (``limit`` + ``continue``) and yields its items one at a
time, so memory holds one page, never a whole cluster. Secrets are only ever listed as metadata
(``PartialObjectMetadataList``, asked for in the Accept header as the API server documents): their values
never enter the process. Errors become ``ClusterError``, whose message names the verb and the resource that
failed and never quotes the API server's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import orjson
import urllib3
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from gtc_admission import constants as c
from gtc_admission.namespace_cache import (
    ENV_KUBECONFIG,
    ENV_KUBERNETES_SERVICE_HOST,
    ClusterCredentials,
    client_configuration,
)

# The Accept header that makes the API server answer a list with metadata only (no data, no spec).
ACCEPT_METADATA_ONLY: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
DEFAULT_KUBECONFIG: Final = "~/.kube/config"
DEFAULT_PAGE_SIZE: Final = 500
HTTP_UNAUTHORIZED: Final = 401
HTTP_FORBIDDEN: Final = 403
HTTP_NOT_FOUND: Final = 404
HTTP_CONFLICT: Final = 409
HTTP_GONE: Final = 410


@dataclass(frozen=True)
class Kind:
    """A kind the audit lists: its API group/version, its resource name (plural) and its kind."""

    api_version: str
    plural: str
    kind: str


NAMESPACE: Final = Kind("v1", "namespaces", "Namespace")
SECRET: Final = Kind("v1", "secrets", "Secret")
POD: Final = Kind("v1", "pods", "Pod")
DEPLOYMENT: Final = Kind("apps/v1", "deployments", "Deployment")
STATEFUL_SET: Final = Kind("apps/v1", "statefulsets", "StatefulSet")
DAEMON_SET: Final = Kind("apps/v1", "daemonsets", "DaemonSet")
REPLICA_SET: Final = Kind("apps/v1", "replicasets", "ReplicaSet")
JOB: Final = Kind("batch/v1", "jobs", "Job")
CRON_JOB: Final = Kind("batch/v1", "cronjobs", "CronJob")
POLICY_REPORT: Final = Kind(
    f"{c.POLICY_REPORT_GROUP}/{c.POLICY_REPORT_VERSION}", c.POLICY_REPORT_PLURAL, c.POLICY_REPORT_KIND
)
# Every kind the audit lists (the auditors' ClusterRole grants `list` on exactly these).
LISTED_KINDS: Final = (
    NAMESPACE,
    SECRET,
    POD,
    DEPLOYMENT,
    STATEFUL_SET,
    DAEMON_SET,
    REPLICA_SET,
    JOB,
    CRON_JOB,
)


class ClusterError(Exception):
    """The cluster cannot be read or written (CLI exit 3): unreachable, or a verb on a resource refused.

    ``status`` is the HTTP status of the refusal (None when the API server was not reached)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CredentialsError(Exception):
    """No usable credentials (CLI exit 2): no kubeconfig, an unknown context, broken in-cluster files."""


@dataclass(frozen=True)
class ClusterSettings:
    """Where the credentials come from, decided once in main from the environment and the flags."""

    credentials: ClusterCredentials
    context: str | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


def cluster_settings_from_env(
    environ: Mapping[str, str], *, context: str | None, page_size: int = DEFAULT_PAGE_SIZE
) -> ClusterSettings:
    """In a pod (KUBERNETES_SERVICE_HOST) its ServiceAccount, unless --context asks for a kubeconfig
    context; elsewhere KUBECONFIG (a colon-separated list is merged, as kubectl does), or ~/.kube/config."""
    if environ.get(ENV_KUBERNETES_SERVICE_HOST) and context is None:
        return ClusterSettings(ClusterCredentials(in_cluster=True), page_size=page_size)
    kubeconfig = environ.get(ENV_KUBECONFIG) or DEFAULT_KUBECONFIG
    return ClusterSettings(ClusterCredentials(False, kubeconfig), context=context, page_size=page_size)


def _where(kind: Kind, namespace: str | None) -> str:
    return f"{kind.plural} in namespace {namespace}" if namespace else f"{kind.plural} (all namespaces)"


class KubernetesCluster:
    """Reads lists and writes PolicyReports through the ``kubernetes`` client, with raw JSON (no models)."""

    def __init__(self, api_client: k8s_client.ApiClient, settings: ClusterSettings) -> None:
        self._api_client = api_client
        self._settings = settings
        core = k8s_client.CoreV1Api(api_client)
        apps = k8s_client.AppsV1Api(api_client)
        batch = k8s_client.BatchV1Api(api_client)
        self._custom = k8s_client.CustomObjectsApi(api_client)
        self._namespaced: Mapping[Kind, Callable[..., object]] = {
            SECRET: core.list_namespaced_secret,
            POD: core.list_namespaced_pod,
            DEPLOYMENT: apps.list_namespaced_deployment,
            STATEFUL_SET: apps.list_namespaced_stateful_set,
            DAEMON_SET: apps.list_namespaced_daemon_set,
            REPLICA_SET: apps.list_namespaced_replica_set,
            JOB: batch.list_namespaced_job,
            CRON_JOB: batch.list_namespaced_cron_job,
        }
        self._list_namespace: Callable[..., object] = core.list_namespace

    @classmethod
    def connect(cls, settings: ClusterSettings) -> KubernetesCluster:
        """Load the credentials once; CredentialsError when they are missing or unusable (no request yet)."""
        try:
            configuration = client_configuration(settings.credentials, context=settings.context)
        except (ConfigException, OSError) as exc:
            # ConfigException texts name files and contexts, never credentials.
            raise CredentialsError(
                f"cannot load credentials from {settings.credentials.describe()}: {exc}"
            ) from None
        return cls(k8s_client.ApiClient(configuration), settings)

    @property
    def host(self) -> str:
        host: str = self._api_client.configuration.host
        return host

    # --- reading ---

    def namespaces(self) -> Iterator[Mapping[str, Any]]:
        """GET: /api/v1/namespaces (paged)"""
        return self._items(self._list_namespace, NAMESPACE, None, {})

    def objects(
        self, kind: Kind, namespace: str, *, field_selector: str | None = None
    ) -> Iterator[Mapping[str, Any]]:
        """GET: /api(s)/<group>/<version>/namespaces/<namespace>/<plural> (paged). Never for Secrets."""
        if kind == SECRET:
            raise ValueError("Secrets are only listed as metadata: use secret_metadata")
        arguments: dict[str, Any] = {"namespace": namespace}
        if field_selector:
            arguments["field_selector"] = field_selector
        return self._items(self._namespaced[kind], kind, namespace, arguments)

    def secret_metadata(self, namespace: str, name: str) -> Iterator[Mapping[str, Any]]:
        """GET: /api/v1/namespaces/<namespace>/secrets?fieldSelector=metadata.name=<name>, metadata only."""
        arguments = {"namespace": namespace, "field_selector": f"metadata.name={name}"}
        return self._items(
            self._namespaced[SECRET], SECRET, namespace, arguments, accept=ACCEPT_METADATA_ONLY
        )

    def _items(
        self,
        call: Callable[..., object],
        kind: Kind,
        namespace: str | None,
        arguments: Mapping[str, Any],
        *,
        accept: str | None = None,
    ) -> Iterator[Mapping[str, Any]]:
        token: str | None = None
        while True:
            page = self._page(call, _where(kind, namespace), {**arguments, "_continue": token}, accept)
            items = page.get("items")
            for item in items if isinstance(items, list) else ():
                if isinstance(item, dict):
                    yield item
            list_meta = page.get("metadata")
            token = list_meta.get("continue") if isinstance(list_meta, dict) else None
            if not token or not isinstance(token, str):
                return

    def _page(
        self, call: Callable[..., object], where: str, arguments: Mapping[str, Any], accept: str | None
    ) -> Mapping[str, Any]:
        options: dict[str, Any] = {
            **arguments,
            "limit": self._settings.page_size,
            "_preload_content": False,
            "_request_timeout": (self._settings.connect_timeout, self._settings.read_timeout),
        }
        if accept:
            options["_headers"] = {"Accept": accept}  # a fresh dict: the client adds to it
        response = cast(urllib3.HTTPResponse, self._call(f"list {where}", call, options))
        try:
            document = orjson.loads(response.data)
        except orjson.JSONDecodeError:
            raise ClusterError(f"the API server's list of {where} is not JSON") from None
        finally:
            response.release_conn()
        if not isinstance(document, dict):
            raise ClusterError(f"the API server's list of {where} is not an object")
        return document

    def _call(self, what: str, call: Callable[..., object], options: Mapping[str, Any]) -> object:
        """One request (``what``: the verb and the resource); every failure becomes a ClusterError."""
        try:
            return call(**options)
        except ApiException as exc:
            raise ClusterError(_refusal(what, exc.status), exc.status) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            # Type only: urllib3's texts are long; the host says where.
            raise ClusterError(
                f"cluster unreachable at {self.host}: {what} failed ({type(exc).__name__})"
            ) from None

    # --- writing PolicyReports ---

    def apply_policy_report(self, report: Mapping[str, Any]) -> Literal["created", "replaced"]:
        """POST, or GET + PUT: /apis/wgpolicyk8s.io/v1alpha2/namespaces/<ns>/policyreports/<name>.

        Create; when it exists, replace it whole (every result of the last run goes), conditioned on the
        resourceVersion just read, as the API server requires for custom resources.
        """
        metadata = report["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        common: dict[str, Any] = {
            "group": c.POLICY_REPORT_GROUP,
            "version": c.POLICY_REPORT_VERSION,
            "namespace": namespace,
            "plural": c.POLICY_REPORT_PLURAL,
            "_request_timeout": (self._settings.connect_timeout, self._settings.read_timeout),
        }
        where = f"{c.POLICY_REPORT_PLURAL} in namespace {namespace}"
        try:
            self._call(
                f"create {where}", self._custom.create_namespaced_custom_object, {**common, "body": report}
            )
            return "created"
        except ClusterError as exc:
            if exc.status != HTTP_CONFLICT:
                raise
        current = self._call(
            f"get {where}", self._custom.get_namespaced_custom_object, {**common, "name": name}
        )
        current_meta = current.get("metadata") if isinstance(current, dict) else None
        version = current_meta.get("resourceVersion") if isinstance(current_meta, dict) else None
        body = {**report, "metadata": {**metadata, "resourceVersion": version}}
        self._call(
            f"update {where}",
            self._custom.replace_namespaced_custom_object,
            {**common, "name": name, "body": body},
        )
        return "replaced"

    def our_policy_reports(self) -> Iterator[tuple[str, str]]:
        """GET: /apis/wgpolicyk8s.io/v1alpha2/policyreports?labelSelector=<ours> (paged): (namespace, name)
        of every report an audit wrote, in any namespace."""
        arguments = {
            "group": c.POLICY_REPORT_GROUP,
            "version": c.POLICY_REPORT_VERSION,
            "plural": c.POLICY_REPORT_PLURAL,
            "label_selector": f"{c.LABEL_MANAGED_BY}={c.MANAGED_BY_AUDIT}",
        }
        for report in self._items(self._custom.list_cluster_custom_object, POLICY_REPORT, None, arguments):
            meta = report.get("metadata")
            if isinstance(meta, dict) and isinstance(meta.get("namespace"), str):
                yield meta["namespace"], str(meta.get("name", ""))

    def delete_policy_report(self, namespace: str, name: str) -> None:
        """DELETE: /apis/wgpolicyk8s.io/v1alpha2/namespaces/<ns>/policyreports/<name> (gone already: fine)."""
        try:
            self._call(
                f"delete {c.POLICY_REPORT_PLURAL} in namespace {namespace}",
                self._custom.delete_namespaced_custom_object,
                {
                    "group": c.POLICY_REPORT_GROUP,
                    "version": c.POLICY_REPORT_VERSION,
                    "namespace": namespace,
                    "plural": c.POLICY_REPORT_PLURAL,
                    "name": name,
                    "_request_timeout": (self._settings.connect_timeout, self._settings.read_timeout),
                },
            )
        except ClusterError as exc:
            if exc.status != HTTP_NOT_FOUND:
                raise

    def close(self) -> None:
        close: Callable[[], None] = self._api_client.close
        close()


def _refusal(what: str, status: int | None) -> str:
    """What an HTTP error status means for this request; the API server's body is never quoted."""
    if status == HTTP_FORBIDDEN:
        return f"access refused: {what} is forbidden (403) for these credentials"
    if status == HTTP_UNAUTHORIZED:
        return f"access refused: the API server did not accept the credentials (401) to {what}"
    if status == HTTP_NOT_FOUND:
        return f"{what}: not found (404); is the resource served here (the PolicyReport CRD)?"
    if status == HTTP_GONE:
        return f"{what}: the paged list expired (410) before it was read to the end; run again"
    return f"the API server answered {status} to {what}"
