"""The environment variables the kubelet gives a container for the Services it can see ("service links").

Unless a pod sets ``enableServiceLinks: false``, the kubelet adds, for every Service of the pod's namespace
that has a cluster IP (and always for the ``kubernetes`` Service of ``default``), variables named after the
Service (kubernetes pkg/kubelet/envvars, kubelet_pods.go ``getServiceEnvVarMap``). NAME is the Service
name upper-cased with ``-`` turned into ``_``:

- ``NAME_SERVICE_HOST`` = the cluster IP; ``NAME_SERVICE_PORT`` = the first port's number;
- ``NAME_SERVICE_PORT_<PORT NAME>`` = the number of each named port (the port name converted the same way);
- the Docker-link ones: ``NAME_PORT`` = ``<proto>://<ip>:<port>`` of the first port, and for every port
  ``NAME_PORT_<port>_<PROTO>`` (same value), ``..._PROTO`` (``tcp``), ``..._PORT`` (the number) and
  ``..._ADDR`` (the cluster IP). The address is written host:port the way Go's ``net.JoinHostPort`` does
  (an IPv6 cluster IP in brackets).

A Service without a cluster IP (headless ``None``, or ``ExternalName``) gets none. A variable that the
container's own ``env`` defines wins over a link variable of the same name: ``container_environment``.

This module builds those variables for a list of Services, so a test can start a process exactly as it
would start in a pod, and ``LINK_VARIABLE`` matches every name the rules above can produce.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

# The API server's validation of the names involved (apimachinery validation):
# a Service name is a DNS-1035 label, a port name an IANA service name.
DNS1035_LABEL: Final = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
IANA_SVC_NAME: Final = re.compile(r"(?=[a-z0-9-]{1,15}$)(?!.*--)(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?")
PROTOCOLS: Final = ("TCP", "UDP", "SCTP")
DEFAULT_PROTOCOL: Final = "TCP"

# The kubelet always adds this Service of the default namespace, even with enableServiceLinks: false. Its
# cluster IP is the first of the service range (10.96.0.1 with kubeadm's and kind's default range).
MASTER_SERVICE_NAME: Final = "kubernetes"
SERVICE_RANGE: Final = ipaddress.ip_network("10.96.0.0/12")

# Every name the rules can produce, converted Service name (NAME) first. It is slightly wider than the
# rules (a port name of digits only, a port number up to 99999): a name it matches may be impossible, a
# name it does not match is certainly never produced. tests/unit/test_service_links.py checks, with
# generated Services, that every variable link_variables builds matches it.
_NAME: Final = r"[A-Z](?:[A-Z0-9_]{0,61}[A-Z0-9])?"
_PORT_NAME: Final = r"[A-Z0-9](?:[A-Z0-9_]{0,13}[A-Z0-9])?"
_PORT_NUMBER: Final = r"[1-9][0-9]{0,4}"
_PROTO: Final = "|".join(PROTOCOLS)
LINK_VARIABLE: Final = re.compile(
    rf"{_NAME}_(?:"
    rf"SERVICE_HOST|SERVICE_PORT(?:_{_PORT_NAME})?"
    rf"|PORT(?:_{_PORT_NUMBER}_(?:{_PROTO})(?:_PROTO|_PORT|_ADDR)?)?"
    r")"
)


class ServiceError(ValueError):
    """A Service the API server would refuse; the message names the Service and the field."""


@dataclass(frozen=True)
class ServicePort:
    port: int
    name: str = ""
    protocol: str = DEFAULT_PROTOCOL


@dataclass(frozen=True)
class Service:
    """What the kubelet reads of a Service. ``cluster_ip`` "" or "None": no cluster IP, so no variables."""

    name: str
    cluster_ip: str
    ports: tuple[ServicePort, ...]

    def __post_init__(self) -> None:
        if not DNS1035_LABEL.fullmatch(self.name):
            raise ServiceError(f"Service {self.name!r}: metadata.name is not a DNS-1035 label")
        if not self.ports:
            raise ServiceError(f"Service {self.name!r}: spec.ports is empty")
        for index, port in enumerate(self.ports):
            where = f"Service {self.name!r}: spec.ports[{index}]"
            if not 1 <= port.port <= 65535:
                raise ServiceError(f"{where}.port {port.port} is out of range 1-65535")
            if port.protocol not in PROTOCOLS:
                raise ServiceError(f"{where}.protocol {port.protocol!r} is not one of {', '.join(PROTOCOLS)}")
            if port.name and not IANA_SVC_NAME.fullmatch(port.name):
                raise ServiceError(f"{where}.name {port.name!r} is not an IANA service name")
            if not port.name and len(self.ports) > 1:
                raise ServiceError(f"{where}.name is required when a Service has several ports")

    @property
    def has_cluster_ip(self) -> bool:
        return self.cluster_ip not in ("", "None")


def master_service() -> Service:
    """``kubernetes`` of the default namespace, as every cluster has it: port 443 named https."""
    return Service(MASTER_SERVICE_NAME, str(SERVICE_RANGE[1]), (ServicePort(443, "https"),))


def env_name(name: str) -> str:
    """A Service or port name as the kubelet puts it into a variable name."""
    return name.upper().replace("-", "_")


def _host_port(ip: str, port: int) -> str:
    # Go's net.JoinHostPort: brackets around a host that contains a colon (an IPv6 address).
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def link_variables(services: Iterable[Service]) -> dict[str, str]:
    """The variables the kubelet derives from ``services`` (those without a cluster IP give none)."""
    variables: dict[str, str] = {}
    for service in services:
        if not service.has_cluster_ip:
            continue
        prefix = env_name(service.name)
        first = service.ports[0]
        variables[f"{prefix}_SERVICE_HOST"] = service.cluster_ip
        variables[f"{prefix}_SERVICE_PORT"] = str(first.port)
        for port in service.ports:
            if port.name:
                variables[f"{prefix}_SERVICE_PORT_{env_name(port.name)}"] = str(port.port)
        variables[f"{prefix}_PORT"] = (
            f"{first.protocol.lower()}://{_host_port(service.cluster_ip, first.port)}"
        )
        for port in service.ports:
            link = f"{prefix}_PORT_{port.port}_{port.protocol}"
            variables[link] = f"{port.protocol.lower()}://{_host_port(service.cluster_ip, port.port)}"
            variables[f"{link}_PROTO"] = port.protocol.lower()
            variables[f"{link}_PORT"] = str(port.port)
            variables[f"{link}_ADDR"] = service.cluster_ip
    return variables


def container_environment(links: Mapping[str, str], container_env: Mapping[str, str]) -> dict[str, str]:
    """A container's environment: the link variables, overridden by what the container's ``env`` sets."""
    return {**links, **container_env}


def services_in(objects: Iterable[Mapping[str, Any] | None], *, first_ip: int = 10) -> list[Service]:
    """Every ``kind: Service`` of parsed manifests, as the API server would store it.

    A Service that names no ``clusterIP`` gets one allocated from ``SERVICE_RANGE`` (the ``first_ip``-th
    address on); ``clusterIP: None`` and ``type: ExternalName`` stay without one.
    """
    services: list[Service] = []
    for obj in objects:
        if not obj or obj.get("kind") != "Service":
            continue
        name = str((obj.get("metadata") or {}).get("name", ""))
        spec = obj.get("spec") or {}
        cluster_ip = str(spec.get("clusterIP") or "")
        if spec.get("type") == "ExternalName":
            cluster_ip = ""
        elif not cluster_ip:
            cluster_ip = str(SERVICE_RANGE[first_ip + len(services)])
        ports = tuple(
            ServicePort(
                port=int(port["port"]),
                name=str(port.get("name") or ""),
                protocol=str(port.get("protocol") or DEFAULT_PROTOCOL),
            )
            for port in spec.get("ports") or []
        )
        services.append(Service(name, cluster_ip, ports))
    return services
