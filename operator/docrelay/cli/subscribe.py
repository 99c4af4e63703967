"""`docrelay subscribe`: point the platform's RESThooks for a workspace at the gateway."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from docrelay.cli.common import EXIT_USAGE, CliError
from docrelay.gateway.platform import DEFAULT_EVENTS, PlatformError, subscribe
from docrelay.gateway.settings import GatewaySettingsError, load_gateway_settings


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "subscribe",
        parents=parents,
        help="subscribe the gateway to a workspace's document events",
        description=(
            "Create the platform's RESThook subscriptions (POST /v3/resthook_subscriptions) "
            "pointing at the gateway, one per event. The platform then calls the gateway with "
            "X-Hook-Secret and the gateway activates the subscription. The platform URL, token "
            "and organization come from flags or DOCRELAY_GATEWAY_PLATFORM_URL, "
            "DOCRELAY_GATEWAY_PLATFORM_TOKEN and DOCRELAY_GATEWAY_PLATFORM_ORGANIZATION."
        ),
    )
    parser.add_argument("--workspace", required=True, help="the platform workspace identifier")
    parser.add_argument(
        "--event",
        action="append",
        help=f"an event to subscribe to; repeatable (default: {', '.join(DEFAULT_EVENTS)})",
    )
    parser.add_argument(
        "--url",
        required=True,
        help="the gateway's public URL, e.g. https://hooks.example.com/v1/events/<namespace>",
    )
    parser.add_argument("--organization", help="the platform organization identifier")
    parser.add_argument("--platform-url", help="the platform API base URL")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_gateway_settings(
            platform_url=args.platform_url, platform_organization=args.organization
        )
    except GatewaySettingsError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not settings.platform_url:
        raise CliError("no platform URL: --platform-url or DOCRELAY_GATEWAY_PLATFORM_URL", 2)
    if not settings.platform_organization:
        raise CliError(
            "no organization: --organization or DOCRELAY_GATEWAY_PLATFORM_ORGANIZATION", 2
        )
    if not args.url.startswith(("https://", "http://")):
        raise CliError("--url must be an http(s) URL", EXIT_USAGE)
    token = settings.platform_token.get_secret_value() if settings.platform_token else None
    try:
        created = subscribe(
            settings.platform_url,
            token,
            target_url=args.url,
            events=args.event or DEFAULT_EVENTS,
            organization=settings.platform_organization,
            workspace=args.workspace,
        )
    except PlatformError as exc:
        raise CliError(str(exc)) from None
    for event, answer in created:
        ident = answer.get("id", answer.get("identifier", "?"))
        sys.stdout.write(f"subscribed {event} -> {args.url} (subscription {ident})\n")
    return 0
