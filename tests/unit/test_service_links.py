"""No Service name can set a variable the worker runtime or the demo worker reads (issue 10).

The kubelet gives every pod link variables for the Services of its namespace (tests/support/service_links.py
has the rules). A variable the runtime reads under such a name is overwritten by whoever creates a Service:
`DEMO_WORKER_PORT=tcp://10.0.0.166:80` for a Service `demo-worker` kept the demo worker from starting. The
variables are taken from the code's ENV_* constants, so a new one is checked without touching this file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gtc_admission import constants as admission_constants
from gtc_secrets import constants as runtime_constants
from gtc_secrets import demo_worker
from tests.support.service_links import (
    DNS1035_LABEL,
    IANA_SVC_NAME,
    LINK_VARIABLE,
    PROTOCOLS,
    Service,
    ServiceError,
    ServicePort,
    container_environment,
    link_variables,
    master_service,
)

RUNTIME = Path(__file__).resolve().parents[2] / "runtime" / "gtc_secrets"
# The modules that name what a worker reads: the runtime's constants, the demo worker, and the webhook's
# constants (the names it injects into workers, which the runtime reads).
MODULES: tuple[ModuleType, ...] = (runtime_constants, demo_worker, admission_constants)
# How an environment variable's name looks, to find names written in the runtime's code.
ENV_NAME_SHAPE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


def read_variables() -> dict[str, str]:
    """Every ENV_* constant of MODULES: ``module.ENV_X`` -> the variable's name."""
    return {
        f"{module.__name__}.{attribute}": value
        for module in MODULES
        for attribute, value in vars(module).items()
        if attribute.startswith("ENV_") and isinstance(value, str)
    }


# --- the helper builds what the kubelet builds -------------------------------------------------------


def test_link_variables_of_the_kubernetes_documentation_example() -> None:
    """Service "redis-master" (TCP 6379, 10.0.0.11) of the Kubernetes docs gives exactly its 7 variables."""
    redis = Service("redis-master", "10.0.0.11", (ServicePort(6379),))
    assert link_variables([redis]) == {
        "REDIS_MASTER_SERVICE_HOST": "10.0.0.11",
        "REDIS_MASTER_SERVICE_PORT": "6379",
        "REDIS_MASTER_PORT": "tcp://10.0.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP": "tcp://10.0.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_6379_TCP_PORT": "6379",
        "REDIS_MASTER_PORT_6379_TCP_ADDR": "10.0.0.11",
    }


def test_link_variables_named_ports_ipv6_and_no_cluster_ip() -> None:
    """Named ports get _SERVICE_PORT_<NAME>, IPv6 is bracketed, a headless Service gives nothing."""
    dns = Service("kube-dns", "fd00::a", (ServicePort(53, "dns", "UDP"), ServicePort(53, "dns-tcp")))
    headless = Service("db", "None", (ServicePort(5432),))
    variables = link_variables([dns, headless])
    assert variables["KUBE_DNS_SERVICE_PORT_DNS"] == variables["KUBE_DNS_SERVICE_PORT_DNS_TCP"] == "53"
    assert variables["KUBE_DNS_PORT"] == variables["KUBE_DNS_PORT_53_UDP"] == "udp://[fd00::a]:53"
    assert variables["KUBE_DNS_PORT_53_TCP"] == "tcp://[fd00::a]:53"
    assert not any(name.startswith("DB_") for name in variables)


def test_the_containers_own_env_wins_over_a_link_variable() -> None:
    """As in the kubelet, a variable the container's env sets is not replaced by a link variable."""
    links = link_variables([master_service()])
    environ = container_environment(links, {"KUBERNETES_PORT": "mine"})
    assert environ["KUBERNETES_PORT"] == "mine"
    assert environ["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


@pytest.mark.parametrize(
    ("name", "ports", "fragment"),
    [
        ("Demo_Worker", (ServicePort(80),), "not a DNS-1035 label"),
        ("demo-worker", (), "spec.ports is empty"),
        ("demo-worker", (ServicePort(0),), r"spec.ports\[0\].port 0 is out of range"),
        ("demo-worker", (ServicePort(80, protocol="HTTP"),), "protocol 'HTTP'"),
        ("demo-worker", (ServicePort(80, "http--x"),), "not an IANA service name"),
        ("demo-worker", (ServicePort(80, "http"), ServicePort(81)), r"spec.ports\[1\].name is required"),
    ],
)
def test_a_service_the_api_server_refuses_is_refused(
    name: str, ports: tuple[ServicePort, ...], fragment: str
) -> None:
    """A Service that fails the API server's validation is an error naming the Service and the field."""
    with pytest.raises(ServiceError, match=fragment):
        Service(name, "10.96.0.20", ports)


# --- the pattern covers every name the rules produce ---------------------------------------------------

# Port names: IANA service names, generated from a plain regex (hypothesis has no lookaheads) and filtered.
port_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?", fullmatch=True).filter(
    lambda name: IANA_SVC_NAME.fullmatch(name) is not None
)
cluster_ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@st.composite
def services(draw: st.DrawFn) -> Service:
    """Any Service the API server accepts: one unnamed or named port, or several named ones."""
    count = draw(st.integers(1, 4))
    names = draw(st.lists(port_names, min_size=count, max_size=count, unique=True))
    if count == 1 and draw(st.booleans()):
        names = [""]
    ports = tuple(
        ServicePort(draw(st.integers(1, 65535)), name, draw(st.sampled_from(PROTOCOLS))) for name in names
    )
    return Service(draw(st.from_regex(DNS1035_LABEL, fullmatch=True)), draw(cluster_ips), ports)


@given(st.lists(services(), min_size=1, max_size=4))
def test_every_link_variable_matches_the_pattern_and_none_is_read(generated: list[Service]) -> None:
    """For any Services: each variable the kubelet would make matches LINK_VARIABLE, and none is read."""
    variables = link_variables(generated)
    assert variables
    assert [name for name in variables if not LINK_VARIABLE.fullmatch(name)] == []
    assert set(variables).isdisjoint(read_variables().values())


@pytest.mark.parametrize(
    "name",
    [
        "DEMO_WORKER_PORT",  # the demo worker's old port variable: the check must flag it (issue 10)
        "DEMO_WORKER_SERVICE_HOST",
        "DEMO_WORKER_SERVICE_PORT",
        "DEMO_WORKER_SERVICE_PORT_HTTP",
        "DEMO_WORKER_PORT_80_TCP",
        "DEMO_WORKER_PORT_8080_SCTP_PROTO",
        "VAULT_PORT_8200_UDP_PORT",
        "A__B_PORT_1_TCP_ADDR",  # Service "a--b" is a valid DNS-1035 label
    ],
)
def test_the_pattern_matches_link_variables(name: str) -> None:
    """Names of every kind the kubelet makes, among them the demo worker's old DEMO_WORKER_PORT."""
    assert LINK_VARIABLE.fullmatch(name)


@pytest.mark.parametrize(
    "name",
    [
        "DEMO_WORKER_HOST",  # only <NAME>_SERVICE_HOST is made
        "DEMO_WORKER_PORT_NUMBER",  # after _PORT_ the kubelet writes a number and a protocol
        "DEMO_WORKER_PORT_80_HTTP",  # HTTP is no Service protocol
        "DEMO_WORKER_PORT_0_TCP",
        "1DEMO_PORT",  # a Service name starts with a letter
        "DEMO__PORT",  # nor does it end with "-"
        "A" * 64 + "_PORT",  # at most 63 characters
        "DEMO_SERVICE_PORT_" + "A" * 16,  # a port name has at most 15
    ],
)
def test_the_pattern_does_not_match_other_names(name: str) -> None:
    """Names no Service can produce are not matched: the pattern is no catch-all."""
    assert not LINK_VARIABLE.fullmatch(name)


# --- what the runtime and the demo worker read ---------------------------------------------------------


def test_the_variables_read_are_found() -> None:
    """The constants are found (the demo worker's port and the runtime's Vault address among them)."""
    found = read_variables()
    assert found[f"{demo_worker.__name__}.ENV_PORT"] == demo_worker.ENV_PORT
    assert found[f"{runtime_constants.__name__}.ENV_VAULT_ADDR"] == runtime_constants.ENV_VAULT_ADDR


@pytest.mark.parametrize(("where", "name"), sorted(read_variables().items()))
def test_no_variable_read_can_be_set_by_a_service(where: str, name: str) -> None:
    """No variable the runtime or the demo worker reads has a name the kubelet makes for some Service."""
    assert not LINK_VARIABLE.fullmatch(name), (
        f"{where} = {name!r} is the name of a service-link variable: any Service in a worker's namespace "
        "with the matching name would set it; choose a name the kubelet never generates"
    )


def _env_shaped_literals(path: Path) -> list[tuple[int, str]]:
    """String literals of a module that look like environment variable names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and ENV_NAME_SHAPE.fullmatch(node.value)
    ]


def test_the_runtime_names_variables_only_through_env_constants() -> None:
    """Every variable-shaped name in runtime/gtc_secrets is an ENV_* constant of MODULES, so the checks
    above see it (a name read as a literal, or a constant in another module, fails here)."""
    known = set(read_variables().values())
    stray = [
        f"{path.name}:{line}: {value}"
        for path in sorted(RUNTIME.glob("*.py"))
        for line, value in _env_shaped_literals(path)
        if value not in known
    ]
    assert stray == [], "make these ENV_* constants of gtc_secrets.constants (or demo_worker): " + str(stray)
