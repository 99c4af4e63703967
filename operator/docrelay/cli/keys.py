"""`docrelay keys renew` and `docrelay keys cert`: the install's sealing keys.

Renewal is a request the operator acts on (annotation sealing.docrelay.io/renew-requested on
the key Secret): the private keys never leave the keys namespace
(`<operator namespace>-docrelay-keys` unless the install names another), and only people who
may read and patch that Secret there can ask; tenant users cannot.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

from docrelay.builders.sealing import (
    CERT_CONFIG_MAP,
    CERT_ENTRY,
    KEY_ID_ENTRY,
    KEYS_SECRET,
    RENEW_HANDLED_ANNOTATION,
    RENEW_REQUESTED_ANNOTATION,
    default_keys_namespace,
)
from docrelay.cli.common import EXIT_TIMEOUT, CliError, connect
from docrelay.kube.sealing import annotate_secret, read_secret

POLL_SECONDS = 0.5


def add_parser(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser(
        "keys",
        help="the install's sealing keys: renew, print the certificate",
        description=f"The sealing keys live in Secret {KEYS_SECRET} in the keys namespace, "
        "<the operator's namespace>-docrelay-keys unless the install names another (back it "
        f"up: docs/secrets.md); the newest certificate in ConfigMap {CERT_CONFIG_MAP} in the "
        "operator's namespace.",
    )
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    renew = actions.add_parser(
        "renew",
        parents=parents,
        help="ask the operator for a new sealing key now (old keys are kept)",
    )
    renew.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the new key (default: 60; 0: do not wait)",
    )
    renew.add_argument(
        "--keys-namespace",
        help="the namespace of the key Secret (default: <namespace>-docrelay-keys, as the "
        "operator's default)",
    )
    renew.set_defaults(run=run_renew)
    cert = actions.add_parser(
        "cert", parents=parents, help="print the sealing certificate (for `seal --cert`)"
    )
    cert.set_defaults(run=run_cert)


def run_renew(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    try:
        where = args.keys_namespace or default_keys_namespace(namespace)
    except ValueError as exc:
        raise CliError(f"{exc} (--keys-namespace)") from None
    if read_secret(kube, where, KEYS_SECRET) is None:
        raise CliError(
            f"no Secret {where}/{KEYS_SECRET}: is the operator of {namespace} running? (or "
            "pass --keys-namespace)"
        )
    request = uuid.uuid4().hex
    annotate_secret(kube, where, KEYS_SECRET, {RENEW_REQUESTED_ANNOTATION: request})
    print(f"renewal requested ({request})")
    if args.timeout <= 0:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        stored = read_secret(kube, where, KEYS_SECRET)
        if stored is not None and stored.annotations.get(RENEW_HANDLED_ANNOTATION) == request:
            newest = newest_key_id(stored.data)
            data = kube.read_config_map_data(namespace, CERT_CONFIG_MAP) or {}
            if data.get(KEY_ID_ENTRY) == newest:  # the certificate follows the Secret
                print(f"new sealing key {newest}; older keys are kept")
                return 0
        time.sleep(POLL_SECONDS)
    print(f"error: the operator did not renew within {args.timeout:g}s", file=sys.stderr)
    return EXIT_TIMEOUT


def newest_key_id(entries: dict[str, bytes]) -> str | None:
    """The key id in the newest entry's name (`sealing-key-<created>-<key id>.pem`)."""
    names = sorted(n for n in entries if n.startswith("sealing-key-") and n.endswith(".pem"))
    return names[-1].removesuffix(".pem").rsplit("-", 1)[-1] if names else None


def run_cert(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    data = kube.read_config_map_data(namespace, CERT_CONFIG_MAP) or {}
    if CERT_ENTRY not in data:
        raise CliError(f"no ConfigMap {namespace}/{CERT_CONFIG_MAP}: is the operator running?")
    sys.stdout.write(data[CERT_ENTRY])
    return 0
