"""`docrelay seal`, `docrelay secret set`, `docrelay secret list` and `docrelay secret history`.

The value is read from stdin (piped) or a hidden prompt, never from the command line (argv
is visible to every process on the machine and lands in shell history). It is sealed here,
on the user's machine, with the public certificate; only ciphertext leaves. No command
prints a value: `secret list` and `secret history` show names, fingerprints, dates and
states.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from docrelay.actions.secrets import check_names, history_rows
from docrelay.builders.sealing import CERT_CONFIG_MAP, CERT_ENTRY, integration_secret
from docrelay.cli.common import (
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    connect,
    print_table,
)
from docrelay.kube import INTEGRATIONS, SECRETS, Kube, kubeconfig_namespace
from docrelay.masking import MIN_MASKED_LENGTH, too_short_to_mask
from docrelay.models.secret import MAX_PLAINTEXT
from docrelay.sealing import Binding, key_id, public_key_from_certificate, seal

POLL_SECONDS = 0.5


def add_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    seal_parser = commands.add_parser(
        "seal",
        parents=parents,
        help="seal a secret value into an IntegrationSecret manifest (for Git)",
        description=(
            "Read a value from stdin (e.g. `pass show x | docrelay seal API_KEY --integration "
            "orders`) or a hidden prompt, seal it for NAMESPACE/INTEGRATION/KEY with the "
            "install's public certificate and print an IntegrationSecret manifest, safe to "
            "commit. The value is never taken from the command line. Each seal gets a new name, "
            "so applying it supersedes the older secret with the same key."
        ),
    )
    _value_arguments(seal_parser)
    seal_parser.add_argument("--name", help="the object's name (default: INTEGRATION-KEY-HASH)")
    seal_parser.set_defaults(run=run_seal)

    secret = commands.add_parser(
        "secret",
        aliases=["secrets"],
        help="set and list an integration's secrets (never their values)",
        description="Set and list IntegrationSecrets. No command shows a value.",
    )
    actions = secret.add_subparsers(dest="action", required=True, metavar="ACTION")
    set_parser = actions.add_parser(
        "set",
        parents=parents,
        help="seal a value and apply it",
        description=(
            "Like `docrelay seal`, then create the IntegrationSecret and wait until the "
            "operator has checked it. A secret with the same key is superseded."
        ),
    )
    _value_arguments(set_parser)
    set_parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the operator's check (default: 30; 0: do not wait)",
    )
    set_parser.set_defaults(run=run_set)

    list_parser = actions.add_parser(
        "list",
        parents=parents,
        help="list secrets: names, keys, fingerprints, ages, Active or Superseded",
    )
    list_parser.add_argument("--integration", help="only this integration's secrets")
    list_parser.set_defaults(run=run_list)

    history_parser = actions.add_parser(
        "history",
        parents=parents,
        help="each key's secrets, newest first: fingerprints and dates, never values",
        description=(
            "Per integration and key, every IntegrationSecret from the Active one (the newest) "
            "back: name, state (Active or Superseded), fingerprint, when it was sealed and "
            "created. The operator deletes superseded secrets after a grace period "
            "(docs/secrets.md); deleted ones are not shown (the Integration's SecretPruned "
            "Events name them). No value and no ciphertext is shown."
        ),
    )
    history_parser.add_argument(
        "key", metavar="KEY", nargs="?", help="only this key (environment variable name)"
    )
    history_parser.add_argument("--integration", help="only this integration's secrets")
    history_parser.set_defaults(run=run_history)


def _value_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("key", metavar="KEY", help="the environment variable name, e.g. API_KEY")
    parser.add_argument("--integration", required=True, help="the Integration's name")
    parser.add_argument(
        "--cert",
        type=Path,
        help=f"the sealing certificate (PEM); default: ConfigMap {CERT_CONFIG_MAP} in the "
        "operator's namespace (offline: `docrelay keys cert > cert.pem`)",
    )
    parser.add_argument(
        "--operator-namespace",
        help="where the operator keeps its certificate (default: the secret's namespace)",
    )


# --- pure parts -------------------------------------------------------------------------------


def read_value(stdin: TextIO, prompt: Callable[[str], str], key: str) -> str:
    """The value: all of stdin when piped (one trailing newline dropped, as `echo` adds one),
    else typed twice at a hidden prompt."""
    if stdin.isatty():
        value = prompt(f"Value for {key} (hidden): ")
        if prompt(f"Value for {key} again: ") != value:
            raise CliError("the two values differ; nothing was sealed", EXIT_USAGE)
    else:
        value = stdin.read()
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    if not value:
        raise CliError("no value given (pipe it to stdin, or type it at the prompt)", EXIT_USAGE)
    if too_short_to_mask(value):
        raise CliError(
            f"the value is shorter than {MIN_MASKED_LENGTH} characters; such values cannot be "
            "masked in run logs, so they are refused",
            EXIT_USAGE,
        )
    if len(value.encode()) > MAX_PLAINTEXT:
        raise CliError(f"the value is longer than {MAX_PLAINTEXT} bytes", EXIT_USAGE)
    return value


def sealed_manifest(
    cert_pem: bytes,
    *,
    namespace: str,
    integration: str,
    key: str,
    value: str,
    now: datetime,
    name: str | None = None,
) -> dict[str, Any]:
    """The IntegrationSecret for `value`, sealed with the certificate's key."""
    try:
        public_key = public_key_from_certificate(cert_pem)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    sealed = seal(public_key, Binding(namespace, integration, key), value.encode())
    return integration_secret(
        namespace=namespace,
        integration=integration,
        key=key,
        sealed=sealed,
        key_id=key_id(public_key),
        sealed_at=now,
        name=name,
    )


# --- commands -----------------------------------------------------------------------------------


def _namespace(args: argparse.Namespace) -> str:
    return args.namespace or kubeconfig_namespace(args.kubeconfig, args.context) or "default"


def _certificate(args: argparse.Namespace, kube: Kube | None, namespace: str) -> bytes:
    if args.cert is not None:
        try:
            return Path(args.cert).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the certificate {args.cert}: {exc.strerror}") from None
    if kube is None:
        kube = Kube.connect(args.kubeconfig, args.context)
    where = args.operator_namespace or namespace
    data = kube.read_config_map_data(where, CERT_CONFIG_MAP)
    if not data or CERT_ENTRY not in data:
        raise CliError(
            f"no sealing certificate: ConfigMap {where}/{CERT_CONFIG_MAP} is missing; is the "
            "operator running there? (or pass --cert FILE, or --operator-namespace)"
        )
    return data[CERT_ENTRY].encode()


def missing_integration_warning(
    namespace: str, integration: str, found: bool, names: list[str]
) -> str | None:
    """What `seal` says when the integration does not exist (a typo seals a value no run
    receives); None when it exists."""
    if found:
        return None
    here = f"integrations here: {', '.join(sorted(names)[:10])}" if names else "there are none"
    return (
        f"warning: no Integration named {integration} in namespace {namespace} ({here}); the "
        "value is sealed for that name anyway and no run receives it until that integration "
        "exists (the seal is bound to the name: a typo means sealing again)"
    )


def warn_if_no_integration(args: argparse.Namespace, kube: Kube | None, namespace: str) -> None:
    """Warn on stderr when the integration is not found. With --cert (offline sealing) the
    cluster is not asked; a failed look-up is a note, never an error."""
    if args.cert is not None and kube is None:
        return
    try:
        kube = kube or Kube.connect(args.kubeconfig, args.context)
        found = kube.get(INTEGRATIONS, namespace, args.integration) is not None
        names = (
            []
            if found
            else [o["metadata"]["name"] for o in kube.list_objects(INTEGRATIONS, namespace)]
        )
    except Exception as exc:  # the certificate was read; sealing does not need the cluster
        print(
            f"note: could not check that integration {args.integration} exists: {exc}",
            file=sys.stderr,
        )
        return
    warning = missing_integration_warning(namespace, args.integration, found, names)
    if warning:
        print(warning, file=sys.stderr)


def _seal(args: argparse.Namespace, kube: Kube | None, namespace: str) -> dict[str, Any]:
    check_names(args.integration, args.key)
    cert = _certificate(args, kube, namespace)  # before the prompt: fail before typing
    warn_if_no_integration(args, kube, namespace)
    value = read_value(sys.stdin, getpass.getpass, args.key)
    manifest = sealed_manifest(
        cert,
        namespace=namespace,
        integration=args.integration,
        key=args.key,
        value=value,
        now=datetime.now(UTC),
        name=getattr(args, "name", None),
    )
    del value
    return manifest


def run_seal(args: argparse.Namespace) -> int:
    manifest = _seal(args, None, _namespace(args))
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False, width=1 << 20))
    return 0


def run_set(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    manifest = _seal(args, kube, namespace)
    name = manifest["metadata"]["name"]
    kube.create_or_get(SECRETS, namespace, manifest)  # the name is new per seal
    print(
        f"integrationsecret/{name} created (integration {args.integration}, key {args.key}, "
        f"sealing key {manifest['spec']['keyId']})"
    )
    if args.timeout <= 0:
        return 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        obj = kube.get(SECRETS, namespace, name) or {}
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        if ready is not None and status.get("observedGeneration") == obj["metadata"].get(
            "generation"
        ):
            state = status.get("state", "")
            if ready["status"] == "True":
                print(f"{state}: fingerprint {status.get('fingerprint', '')}")
                return 0
            raise CliError(f"{state or 'not ready'}: {ready['reason']}: {ready['message']}")
        time.sleep(POLL_SECONDS)
    print(f"error: the operator did not check {name} within {args.timeout:g}s", file=sys.stderr)
    return EXIT_TIMEOUT


def _age(timestamp: str | None, now: datetime) -> str:
    if not timestamp:
        return ""
    seconds = int((now - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def secret_rows(objects: list[dict[str, Any]], now: datetime) -> list[list[str]]:
    """One row per secret: never a value, never ciphertext."""
    rows = []
    ordered = sorted(
        objects,
        key=lambda o: (
            o.get("spec", {}).get("integration", ""),
            o.get("spec", {}).get("key", ""),
            o["metadata"].get("creationTimestamp", ""),
        ),
    )
    for obj in ordered:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
        )
        rows.append(
            [
                obj["metadata"]["name"],
                str(spec.get("integration", "")),
                str(spec.get("key", "")),
                str(status.get("state", "")),
                str(ready.get("reason", "")),
                str(status.get("fingerprint", "")),
                str(status.get("keyId", "")),
                _age(obj["metadata"].get("creationTimestamp"), now),
            ]
        )
    return rows


def run_history(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    objects = [
        o
        for o in kube.list_objects(SECRETS, namespace)
        if (not args.integration or o.get("spec", {}).get("integration") == args.integration)
        and (not args.key or o.get("spec", {}).get("key") == args.key)
    ]
    rows = history_rows(objects)
    if not rows:
        print(f"no IntegrationSecrets in namespace {namespace}", file=sys.stderr)
        return 0
    print_table(["INTEGRATION", "KEY", "NAME", "STATE", "FINGERPRINT", "SEALED", "CREATED"], rows)
    print("(superseded secrets the operator pruned are not shown)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    kube, namespace = connect(args)
    objects = kube.list_objects(SECRETS, namespace)
    if args.integration:
        objects = [o for o in objects if o.get("spec", {}).get("integration") == args.integration]
    rows = secret_rows(objects, datetime.now(UTC))
    if not rows:
        print(f"no IntegrationSecrets in namespace {namespace}", file=sys.stderr)
        return 0
    print_table(
        ["NAME", "INTEGRATION", "KEY", "STATE", "REASON", "FINGERPRINT", "KEY ID", "AGE"], rows
    )
    return 0
