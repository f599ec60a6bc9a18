"""The I/O edge of ``gtc-secrets bootstrap``: read Vault's state, plan, print each step, apply its writes.

``VaultAdmin`` is the seam (a GET and a POST on Vault's HTTP API), so that everything else is tested
without Vault; ``HvacVaultAdmin`` is it over hvac. ``read_state`` reads what ``bootstrap_plan.plan``
needs, and ``run`` applies the plan unless it is a dry run. The writes may hold a credential (the reviewer
JWT): only each step's description is printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TextIO

import hvac

from gtc_secrets.bootstrap_plan import Step, VaultState, plan, summary
from gtc_secrets.bootstrap_target import Connection, Target


class VaultAdmin(Protocol):
    def read(self, path: str) -> Mapping[str, Any] | None:
        """GET /v1/<path>: the JSON answer, or None when Vault answers 404."""

    def write(self, path: str, data: Mapping[str, Any]) -> None:
        """POST /v1/<path> with ``data``."""


class HvacVaultAdmin:
    """VaultAdmin over hvac, with the admin token given explicitly (never hvac's env or ~/.vault-token)."""

    def __init__(self, connection: Connection, *, timeout: float = 10.0) -> None:
        verify: str | bool = str(connection.ca_cert) if connection.ca_cert is not None else True
        self._client = hvac.Client(
            url=connection.addr, token=connection.token, verify=verify, timeout=timeout
        )

    def read(self, path: str) -> Mapping[str, Any] | None:
        answer = self._client.read(path)
        return answer if isinstance(answer, Mapping) else None

    def write(self, path: str, data: Mapping[str, Any]) -> None:
        self._client.write_data(path, data=dict(data))

    def close(self) -> None:
        self._client.adapter.close()


def _data(answer: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if answer is None:
        return None
    data = answer.get("data")
    return data if isinstance(data, Mapping) else None


def read_state(vault: VaultAdmin, target: Target) -> VaultState:
    """Everything ``plan`` needs; a path that does not exist (yet) reads as None or is left out."""
    names = [grant.name for grant in target.grants]
    policies: dict[str, str] = {}
    for name in names:
        policy = _data(vault.read(f"sys/policies/acl/{name}"))
        if policy is not None and "policy" in policy:
            policies[name] = str(policy["policy"])
    roles: dict[str, Mapping[str, Any]] = {}
    # The tenant-wide role also when only teams are managed: plan says it is still there.
    for name in dict.fromkeys([*names, target.name]):
        role = _data(vault.read(f"auth/{target.k8s_mount}/role/{name}"))
        if role is not None:
            roles[name] = role
    return VaultState(
        auth_mounts=_data(vault.read("sys/auth")) or {},
        secret_mounts=_data(vault.read("sys/mounts")) or {},
        k8s_config=_data(vault.read(f"auth/{target.k8s_mount}/config")),
        transit_key=_data(vault.read(f"{target.transit_mount}/keys/{target.name}")),
        policies=policies,
        roles=roles,
    )


def run(vault: VaultAdmin, target: Target, *, dry_run: bool, out: TextIO) -> list[Step]:
    """Read, plan, print each step, and (unless ``dry_run``) apply it. Returns the steps."""
    steps = plan(read_state(vault, target), target)
    for step in steps:
        if not dry_run:
            for write in step.writes:
                vault.write(write.path, write.data)
        print(step.describe(dry_run=dry_run), file=out, flush=True)
    print(summary(steps, target, dry_run=dry_run), file=out, flush=True)
    return steps
