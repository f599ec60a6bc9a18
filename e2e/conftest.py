"""Session fixtures of the kind suite: one cluster with everything issue 4 deploys, torn down at the end.

``cluster`` (session) does, in order, and stops at the first failure:

1. skip unless Docker answers, kind >= 0.24 and kubectl are there (the reason says which is missing);
2. copy deploy/ into the session's temp folder (never a user's generated keys) and let
   ``gtc-admission certs`` write the demo Vault's and the webhook's certificates into the copy, copy the
   Vault's CA to where the example namespace makes its ConfigMap gtc-vault-ca from, then read the plan
   (names, images, config, the example worker) from the rendered kustomizations;
3. ``kind create cluster`` with the default CNI (kindnet enforces NetworkPolicy from kind 0.24 on) and
   its own kubeconfig file in the temp folder (``~/.kube/config`` is never touched);
4. ``docker build`` of the webhook image and of the demo worker image (no CA baked in: workers trust the
   demo Vault through the CA ConfigMap the webhook projects, see deploy/README.md), ``kind load`` of both;
5. Vault (deploy/vault), a port-forward to it, ``gtc-secrets bootstrap --team <team>=<namespace>`` (the
   worker team's own role, as the example config's role template names it) against it (Kubernetes host
   ``https://kubernetes.default.svc`` as Vault sees it from inside the cluster, the reviewer JWT from
   ``kubectl create token`` of the token-reviewer ServiceAccount, the cluster CA from kube-root-ca.crt),
   and ``gtc-secrets put`` of a random webhook secret from outside the cluster through the port-forward;
6. the webhook (deploy/overlays/self-managed-ca);
7. the worker namespace with its component, its CA ConfigMap and the demo worker exactly as
   deploy/examples ships them (an unchanged deployer's Deployment: no ServiceAccount, no Vault setting),
   and a router Deployment written the same way.

Teardown (``finally``, also after a failed set-up): port-forwards stop, and the cluster is deleted unless
``--keep`` was given (then its name and kubeconfig are printed). When a test or the set-up failed, the
cluster's state (pods, events, policies, webhook and worker logs; never a Secret) is written to the temp
folder first, and its path printed.

The seeded value is random per run, held in memory, and never printed: checks report Secret names and
audit paths, never content.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e import helpers as h
from e2e import kube
from e2e.layout import LAYOUT
from e2e.stack import (
    Cluster,
    bootstrap_vault,
    build_and_load_images,
    create_cluster,
    deploy_vault,
    deploy_webhook,
    deploy_workloads,
    prepare_deploy,
    render_plan,
    router_app,
    seed_secret,
    write_diagnostics,
)

# The whole session set-up (cluster, image builds, rollouts) runs inside the first test's setup, and
# pytest-timeout counts fixture time: the project's default (300 s) is for unit and integration tests.
E2E_TEST_TIMEOUT_S = 2400
KEEP_OPTION = "--keep"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        KEEP_OPTION,
        action="store_true",
        default=False,
        help="e2e: leave the kind cluster running after the suite (its name and kubeconfig are printed)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(E2E_TEST_TIMEOUT_S))


# ---------------------------------------------------------------------------------------------
# The session fixture.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = h.skip_reason(kube.probe_tools())
    if reason is not None:
        pytest.skip(reason)
    missing = LAYOUT.missing_files()
    if missing:
        pytest.fail(f"deploy/ lacks what the suite deploys: {', '.join(missing)}")

    keep = bool(request.config.getoption(KEEP_OPTION))
    workdir = tmp_path_factory.mktemp("e2e")
    kind = kube.Kind(name=f"gtc-e2e-{secrets.token_hex(3)}", kubeconfig=workdir / "kubeconfig")
    kubectl = kube.Kubectl(kind.kubeconfig)
    deploy = prepare_deploy(workdir, LAYOUT)
    plan = render_plan(kubectl, deploy, LAYOUT)
    ready = False
    with contextlib.ExitStack() as stack:
        try:
            create_cluster(kind, workdir)
            build_and_load_images(kind, plan, LAYOUT)
            root_token = deploy_vault(kubectl, deploy, LAYOUT)
            vault_port = stack.enter_context(
                kube.port_forward(
                    kubectl, LAYOUT.vault_namespace, LAYOUT.vault_service, LAYOUT.vault_port,
                    log_file=workdir / "port-forward-vault.log",
                )
            )  # fmt: skip
            admin = {
                # The certificate covers 127.0.0.1 for exactly this (deploy/README.md).
                "VAULT_ADDR": f"https://127.0.0.1:{vault_port}",
                "VAULT_CACERT": str(deploy / LAYOUT.vault_tls / "ca.crt"),
                "VAULT_TOKEN": root_token,
            }
            bootstrap_vault(kubectl, workdir, plan, LAYOUT, admin)
            seeded = f"e2e-{secrets.token_urlsafe(24)}"
            seed_secret(plan, admin, seeded)
            deploy_webhook(kubectl, deploy, plan, LAYOUT)
            router = router_app(plan)
            deploy_workloads(kubectl, deploy, plan, LAYOUT, router)
            ready = True
            yield Cluster(
                kind=kind,
                kubectl=kubectl,
                workdir=workdir,
                deploy=deploy,
                layout=LAYOUT,
                plan=plan,
                seeded_value=seeded,
                router=router,
            )
        finally:
            if (not ready or request.session.testsfailed) and kind.kubeconfig.exists():
                folder = write_diagnostics(kubectl, workdir, plan)
                print(f"\ne2e: cluster state written to {folder}", file=sys.stderr)
            stack.close()
            if keep:
                print(
                    f"\ne2e: --keep: cluster {kind.name} left running; KUBECONFIG={kind.kubeconfig}; "
                    f"delete it with: kind delete cluster --name {kind.name}",
                    file=sys.stderr,
                )
            else:
                try:
                    kind.delete()
                except kube.CommandFailed as exc:
                    # Do not hide the test's own failure behind the clean-up's; say what is left behind.
                    print(f"\ne2e: could not delete cluster {kind.name}: {exc}", file=sys.stderr)
