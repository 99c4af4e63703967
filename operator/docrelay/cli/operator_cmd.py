"""`docrelay operator`: run the operator (what the Deployment's container runs)."""

from __future__ import annotations

import argparse
from typing import Any

from docrelay.cli.common import EXIT_USAGE, CliError
from docrelay.settings import DEFAULT_HEALTH_PORT, SettingsError, load_settings


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "operator",
        parents=parents,
        help="run the docrelay operator",
        description=(
            "Run the operator against the cluster of the kubeconfig (or in-cluster credentials). "
            "Tenant mode watches one namespace: -n, else the pod's namespace, else the "
            "kubeconfig context's namespace. --all-namespaces watches every namespace. Every "
            "flag also reads from an environment variable, e.g. DOCRELAY_HEALTH_PORT."
        ),
    )
    parser.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        default=None,
        help="cluster mode: watch every namespace (needs a ClusterRole)",
    )
    parser.add_argument("--health-host", help="probe address (default: 0.0.0.0)")
    parser.add_argument(
        "--health-port",
        type=int,
        help=f"probe port; /healthz serves liveness and readiness (default: {DEFAULT_HEALTH_PORT})",
    )
    parser.add_argument(
        "--revision-history-limit", type=int, help="revisions kept per integration (default: 20)"
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    parser.add_argument(
        "--leader-elect",
        action="store_true",
        default=None,
        help="act only while holding the Lease docrelay-operator, so replicas stand by until "
        "the active one stops (docs/operator.md, high availability)",
    )
    parser.add_argument(
        "--leader-election-namespace",
        help="the Lease's namespace (default: the watched namespace, else the pod's)",
    )
    sealing = parser.add_argument_group("sealed secrets (docs/secrets.md)")
    sealing.add_argument(
        "--key-renewal-days", type=int, help="days between new sealing keys (default: 30)"
    )
    sealing.add_argument(
        "--keys-namespace",
        help="where the private sealing keys live, a namespace no tenant user may read "
        "Secrets in (default: <the operator's namespace>-docrelay-keys; it must exist)",
    )
    sealing.add_argument(
        "--key-check-seconds",
        type=float,
        help="how often renewal requests and the schedule are checked (default: 60)",
    )
    sealing.add_argument(
        "--webhook-host",
        help="admission webhook address (default: 0.0.0.0 in a pod, else 127.0.0.1)",
    )
    sealing.add_argument("--webhook-port", type=int, help="admission webhook port (default: 9443)")
    sealing.add_argument(
        "--webhook-service", help="the Service the API server reaches the webhooks through"
    )
    sealing.add_argument(
        "--webhook-cert-dir",
        help="use the serving certificate in this directory (tls.crt, tls.key, ca.crt; e.g. "
        "a mounted cert-manager Secret) instead of making one at each start",
    )
    parser.add_argument(
        "--broker-url", help="the run broker's URL as run pods reach it (docs/broker.md)"
    )
    parser.add_argument(
        "--egress-proxy-url",
        help="the egress proxy's URL as run pods reach it (the gateway's --proxy-port; "
        "docs/egress.md)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(
            namespace=args.namespace,
            all_namespaces=args.all_namespaces,
            kubeconfig=args.kubeconfig,
            context=args.context,
            health_host=args.health_host,
            health_port=args.health_port,
            revision_history_limit=args.revision_history_limit,
            log_level=args.log_level,
            key_renewal_days=args.key_renewal_days,
            keys_namespace=args.keys_namespace,
            key_check_seconds=args.key_check_seconds,
            webhook_host=args.webhook_host,
            webhook_port=args.webhook_port,
            webhook_service=args.webhook_service,
            webhook_cert_dir=args.webhook_cert_dir,
            broker_url=args.broker_url,
            egress_proxy_url=args.egress_proxy_url,
            leader_election=args.leader_elect,
            leader_election_namespace=args.leader_election_namespace,
        )
    except SettingsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    from docrelay.app import run_operator  # kopf only when the operator really runs

    try:
        run_operator(settings)
    except SettingsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    return 0
