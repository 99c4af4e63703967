"""`docrelay console`: the web console on this machine, acting with your kubeconfig's
credentials (as `kubectl proxy` does), or, as the chart runs it, with each user's own bearer
token (`--auth token`). See docs/console.md."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any

from kubernetes import client

from docrelay.cli.common import EXIT_USAGE, CliError, connect
from docrelay.kube import kubeconfig_namespace, load_configuration, service_account_namespace

DEFAULT_PORT = 8080


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "console",
        parents=parents,
        help="serve the web console (integrations, runs, logs, secrets)",
        description=(
            "Serve the web console for one namespace. By default it acts with your kubeconfig "
            "and listens on 127.0.0.1 only; open the link it prints (it holds a one-off "
            "secret, so nobody else on this machine can use your credentials through it). "
            "With --auth token each user signs in with a bearer token (ServiceAccount or OIDC "
            "ID token) that the console forwards on every API call: it has no rights of its "
            "own."
        ),
    )
    parser.add_argument(
        "--address", default="127.0.0.1", help="listen address (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"listen port (default: {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--auth",
        choices=("kubeconfig", "token"),
        default="kubeconfig",
        help="whose credentials: yours from the kubeconfig (default), or each user's token",
    )
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="and this key (PEM); cookies are then Secure")
    parser.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark cookies Secure without serving TLS here (TLS ends at an ingress in front)",
    )
    parser.add_argument(
        "--api-server",
        help="with --auth token: the API server's URL (default: the in-cluster address, else "
        "the kubeconfig's server; the kubeconfig's credentials are never used)",
    )
    parser.add_argument(
        "--api-ca", help="with --auth token: the API server's CA bundle (PEM) for --api-server"
    )
    parser.add_argument(
        "--session-key-file",
        help="seal session cookies with the key in this file (at least 32 bytes, e.g. mounted "
        "from a Secret): every console given the same key serves the same sessions, and a "
        "restart signs nobody out (default: a random key of this process)",
    )
    parser.add_argument(
        "--operator-namespace",
        help="where the operator publishes its sealing certificate (default: the namespace)",
    )
    parser.add_argument(
        "--gateway-url",
        help="the tenant gateway's public URL: Pipedream reports each account connected here "
        "to the gateway, which creates the ConnectedAccount (default: none; the console "
        "creates it when you come back from Pipedream)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from docrelay.console.app import create_app, serve
    from docrelay.console.session import SessionKeyError, read_session_key

    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("give both --tls-cert and --tls-key, or neither", EXIT_USAGE)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    try:
        key = read_session_key(args.session_key_file) if args.session_key_file else None
    except SessionKeyError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    scheme = "https" if tls else "http"
    if args.auth == "kubeconfig":
        kube, namespace = connect(args)
        secret = secrets.token_urlsafe(32)
        app = create_app(
            namespace=namespace,
            auth="kubeconfig",
            kube=kube,
            login_secret=secret,
            secure_cookies=tls is not None or args.secure_cookies,
            operator_namespace=args.operator_namespace,
            session_key=key,
            gateway_url=args.gateway_url,
        )
        print(
            f"docrelay console for namespace {namespace}, as {kube.whoami()}: open\n"
            f"  {scheme}://{_host(args.address)}:{args.port}/login?token={secret}\n"
            "(the link holds a secret: do not share it). Ctrl-C stops it."
        )
    else:
        # No credentials of its own: the configuration gives the API server's address and CA;
        # each session's client carries only that user's token (kube_for_token).
        namespace = (
            args.namespace
            or service_account_namespace()
            or kubeconfig_namespace(args.kubeconfig, args.context)
            or "default"
        )
        app = create_app(
            namespace=namespace,
            auth="token",
            base_configuration=api_configuration(args),
            secure_cookies=tls is not None or args.secure_cookies,
            operator_namespace=args.operator_namespace,
            session_key=key,
            gateway_url=args.gateway_url,
        )
        print(
            f"docrelay console for namespace {namespace} on {scheme}://{args.address}:{args.port}"
        )
    sys.stdout.flush()
    serve(app, args.address, args.port, tls)
    return 0


def api_configuration(args: argparse.Namespace) -> client.Configuration:
    """Where the API server is and how to trust it; never whose credentials (each session's
    client carries only its user's token). In the chart's pod no ServiceAccount token is
    mounted at all: the address comes from the environment, the CA from kube-root-ca.crt."""
    server = args.api_server
    if not server and os.environ.get("KUBERNETES_SERVICE_HOST"):
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        host = f"[{host}]" if ":" in host else host
        server = f"https://{host}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}"
    if server:
        configuration = client.Configuration()
        configuration.host = server
        configuration.ssl_ca_cert = args.api_ca
        return configuration
    return load_configuration(args.kubeconfig, args.context)


def _host(address: str) -> str:
    return (
        "127.0.0.1" if address in ("0.0.0.0", "") else f"[{address}]" if ":" in address else address
    )
