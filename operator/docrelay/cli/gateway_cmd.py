"""`docrelay gateway`: serve the event intake (what the gateway Deployment's container runs)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from docrelay.cli.common import EXIT_USAGE, CliError
from docrelay.gateway.settings import DEFAULT_PORT, GatewaySettingsError, load_gateway_settings


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "gateway",
        parents=parents,
        help="run the docrelay gateway (document events in, runs out)",
        description=(
            "Serve POST /v1/events/<namespace> (the platform's RESThooks) and "
            "/v1/standard-webhooks/<namespace>; one IntegrationRun per matching Integration. "
            "Tenant mode takes events for one namespace (-n, else the pod's, else the "
            "kubeconfig context's); --all-namespaces for any. Every flag also reads from an "
            "environment variable, e.g. DOCRELAY_GATEWAY_PORT. See docs/gateway.md."
        ),
    )
    parser.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        default=None,
        help="take events for every namespace (needs a ClusterRole)",
    )
    parser.add_argument("--host", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"listen port (default: {DEFAULT_PORT})")
    parser.add_argument(
        "--signing-secret",
        help="Secret holding the signing keys (default: docrelay-gateway-signing)",
    )
    parser.add_argument(
        "--api-timeout-seconds",
        type=float,
        help="longest wait for the API server before answering 503 (default: 5)",
    )
    parser.add_argument("--platform-url", help="the document platform's API base URL")
    parser.add_argument(
        "--proxy-port",
        type=int,
        help="serve the egress proxy for run pods on this port (docs/egress.md; default: off)",
    )
    parser.add_argument(
        "--egress-resolve",
        action="append",
        metavar="NAME=ADDRESS",
        help="the egress proxy resolves NAME to ADDRESS instead of asking DNS (split-horizon, "
        "air-gapped); repeatable; the address is still checked against the Integration's cidrs",
    )
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: INFO)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_gateway_settings(
            namespace=args.namespace,
            all_namespaces=args.all_namespaces,
            kubeconfig=args.kubeconfig,
            context=args.context,
            host=args.host,
            port=args.port,
            signing_secret=args.signing_secret,
            api_timeout_seconds=args.api_timeout_seconds,
            platform_url=args.platform_url,
            log_level=args.log_level,
            proxy_port=args.proxy_port,
            egress_resolve=_pairs(args.egress_resolve),
        )
    except GatewaySettingsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    # Imported here: the server stack only when the gateway really runs.
    import uvicorn

    from docrelay.gateway.app import create_app
    from docrelay.gateway.health import ApiHealth
    from docrelay.gateway.index import IntegrationIndex
    from docrelay.gateway.kubeapi import IndexWatcher, KubeApi
    from docrelay.kube import kubeconfig_namespace, load_configuration, service_account_namespace

    if not settings.all_namespaces and settings.namespace is None:
        namespace = (
            service_account_namespace()
            or kubeconfig_namespace(settings.kubeconfig, settings.context)
            or "default"
        )
        settings = settings.model_copy(update={"namespace": namespace})
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    configuration = load_configuration(settings.kubeconfig, settings.context)
    index = IntegrationIndex()
    health = ApiHealth()  # what /readyz answers from: the watch's and the calls' outcomes
    watcher = IndexWatcher(
        configuration,
        index,
        None if settings.all_namespaces else settings.namespace,
        health=health,
    )
    app = create_app(
        settings,
        KubeApi(configuration, settings.api_timeout_seconds, health),
        index,
        on_startup=watcher.start,
        on_shutdown=watcher.stop,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # one line per delivery is noise at volume; metrics count them
        server_header=False,
    )
    return 0


def _pairs(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    pairs = {}
    for value in values:
        name, sep, address = value.partition("=")
        if not sep or not name or not address:
            raise CliError(f"--egress-resolve {value}: expected NAME=ADDRESS", EXIT_USAGE)
        pairs[name] = address
    return pairs
