"""`docrelay connect APP --external-user ID`: a Pipedream Connect link; `docrelay accounts`:
the ConnectedAccounts of a namespace with their health (docs/pipedream.md).

`connect` reads the tenant's Pipedream Secret with the user's own Kubernetes rights (whoever
may read that Secret may make connect links; nobody else can), asks Pipedream for a
single-use Connect token, and prints only the link. With `--gateway-url` (the tenant gateway's
public URL) the link is the console's: Pipedream reports the connection to the gateway, which
creates the ConnectedAccount (the shared action docrelay.actions.accounts.connect_link).
`accounts` needs no Pipedream credentials: it shows what the operator's health checks wrote
into each account's status.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from docrelay.actions import get_integration
from docrelay.actions.accounts import (
    check_account,
    check_webhook_target,
    connect_client,
    connect_link,
)
from docrelay.cli.common import CliError, connect, print_objects, print_table
from docrelay.kube import ACCOUNTS
from docrelay.pipedream import ConnectClient, ConnectError
from docrelay.pipedream.credentials import DEFAULT_SECRET

APP_SLUG = re.compile(r"^[a-z0-9][a-z0-9_]*$")


def add_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    connection, output = parents
    parser = commands.add_parser(
        "connect",
        parents=[connection, output],
        help="print a Pipedream Connect link for an app",
        description="Print a single-use Pipedream Connect link (valid 4 h) that connects APP "
        "for the external user. Needs read access to the namespace's Pipedream Secret. With "
        "--gateway-url, --integration and --account (and the right to patch that Integration), "
        "Pipedream reports the connection to the tenant gateway, which creates the "
        "ConnectedAccount, as for the console's links. Without them, create the "
        "ConnectedAccount yourself with the new apn_ id (docrelay accounts --pipedream lists "
        "them).",
    )
    parser.add_argument("app", metavar="APP", help="the app's Pipedream slug, e.g. slack")
    parser.add_argument("--external-user", required=True, help="the external user id")
    parser.add_argument(
        "--gateway-url",
        metavar="URL",
        help="the tenant gateway's public URL (the chart's gateway.publicUrl): Pipedream "
        "reports the connection to <URL>/v1/pipedream/connections/..., and the gateway creates "
        "the ConnectedAccount",
    )
    parser.add_argument(
        "--integration",
        metavar="NAME",
        help="with --gateway-url: the Integration the account is for (the connection request "
        "is left on it)",
    )
    parser.add_argument(
        "--account",
        metavar="NAME",
        help="with --gateway-url: the ConnectedAccount to create (or point at the new account)",
    )
    parser.add_argument("--secret", default=DEFAULT_SECRET, help="the Pipedream Secret's name")
    parser.add_argument(
        "--environment",
        choices=("development", "production"),
        help="default: the Secret's environment",
    )
    parser.set_defaults(run=run_connect)

    parser = commands.add_parser(
        "accounts",
        parents=[connection, output],
        help="list connected accounts and their health",
        description="List the ConnectedAccounts of a namespace with the health the operator "
        "last saw at Pipedream. --pipedream lists the accounts Pipedream holds for an external "
        "user instead (needs read access to the Pipedream Secret).",
    )
    parser.add_argument(
        "--pipedream",
        metavar="EXTERNAL_USER",
        help="list Pipedream's accounts of this external user",
    )
    parser.add_argument("--app", help="with --pipedream: only this app")
    parser.add_argument("--secret", default=DEFAULT_SECRET, help="the Pipedream Secret's name")
    parser.set_defaults(run=run_accounts)


def _client(args: argparse.Namespace) -> ConnectClient:
    kube, namespace = connect(args)
    return connect_client(kube, namespace, args.secret, getattr(args, "environment", None))


def run_connect(args: argparse.Namespace) -> int:
    if not APP_SLUG.match(args.app):
        raise CliError(f"{args.app!r} is not a Pipedream app slug (e.g. xero_accounting_api)", 2)
    if args.gateway_url:
        if not (args.integration and args.account):
            raise CliError("--gateway-url needs --integration and --account", 2)
        check_webhook_target(args.gateway_url, args.integration, args.account)
        check_account(args.app, args.external_user)  # what the gateway's account will hold
    elif args.integration or args.account:
        raise CliError(
            "--integration and --account name the connection the gateway reports: "
            "give --gateway-url too",
            2,
        )
    kube, namespace = connect(args)
    if args.gateway_url:
        get_integration(kube, namespace, args.integration)
    with connect_client(kube, namespace, args.secret, args.environment) as client:
        try:
            made = connect_link(
                client,
                kube,
                namespace,
                app=args.app,
                external_user=args.external_user,
                gateway_url=args.gateway_url,
                integration=args.integration,
                account=args.account,
            )
        except ConnectError as exc:
            raise CliError(str(exc)) from None
    if args.output:
        shown = {
            "app": args.app,
            "externalUserId": args.external_user,
            "connectLinkUrl": made.url,
            "expiresAt": made.expires_at,
        }
        if made.webhook:
            shown |= {"integration": args.integration, "connectedAccount": args.account}
        print_objects(shown, args.output)
        return 0
    sys.stdout.write(made.url + "\n")
    if made.webhook:
        hint = (
            f"single use, expires {made.expires_at}; once connected, Pipedream reports the "
            f"account to the gateway, which creates ConnectedAccount {args.account} "
            f"(docrelay accounts -n {namespace} shows it and its health)"
        )
    else:
        hint = (
            f"single use, expires {made.expires_at}; once connected, create a "
            "ConnectedAccount with the new account id (docrelay accounts --pipedream "
            f"{args.external_user}), or make the link with --gateway-url, --integration and "
            "--account so the gateway creates it"
        )
    print(hint, file=sys.stderr)
    return 0


def health(item: dict[str, Any]) -> str:
    for condition in (item.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("reason") or condition.get("status"))
    return "NotChecked"


def run_accounts(args: argparse.Namespace) -> int:
    if args.pipedream:
        return _pipedream_accounts(args)
    kube, namespace = connect(args)
    items = sorted(kube.list_objects(ACCOUNTS, namespace), key=lambda a: a["metadata"]["name"])
    if args.output:
        print_objects({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
        return 0
    if not items:
        print(f"no connected accounts in namespace {namespace}")
        return 0
    rows = []
    for item in items:
        spec, status = item.get("spec") or {}, item.get("status") or {}
        rows.append(
            [
                item["metadata"]["name"],
                str(spec.get("app", "")),
                str(spec.get("accountId", "")),
                str(spec.get("externalUserId", "")),
                health(item),
                str(status.get("expiresAt") or "-"),
                str(status.get("lastCheckedAt") or "-"),
            ]
        )
    print_table(["NAME", "APP", "ACCOUNT", "EXTERNAL USER", "HEALTH", "EXPIRES", "CHECKED"], rows)
    return 0


def _pipedream_accounts(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            found = client.list_accounts(external_user_id=args.pipedream, app=args.app)
        except ConnectError as exc:
            raise CliError(str(exc)) from None
    if args.output:
        print_objects(found, args.output)
        return 0
    if not found:
        print(f"Pipedream holds no accounts for external user {args.pipedream}")
        return 0
    rows = [
        [
            str(a.get("id")),
            str((a.get("app") or {}).get("name_slug", "")),
            "dead" if a.get("dead") else "healthy" if a.get("healthy") else "unhealthy",
            str(a.get("expires_at") or "-"),
        ]
        for a in found
    ]
    print_table(["ACCOUNT", "APP", "HEALTH", "EXPIRES"], rows)
    return 0
