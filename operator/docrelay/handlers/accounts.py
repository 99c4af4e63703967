"""ConnectedAccount health: ask Pipedream Connect, write the account's status.

One background thread checks every account every `account_check_seconds` (one list per
round); an account whose spec is new or edited is checked at once, from its watch event.
Not a kopf timer: kopf puts a finalizer on every object that has a timer, so deleting a
ConnectedAccount would wait for the operator, which would also need `patch` on the objects
users own. The status write wakes the Integrations that list the account (dependencies.py),
and their AccountsReady names dead or unhealthy accounts.

The tenant's Pipedream credentials come from the Secret `pipedream_secret` in the account's
namespace (docs/pipedream.md, "Who holds the credentials").
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from docrelay.handlers.boundary import post_event
from docrelay.kube import ACCOUNTS, Kube, KubeError, ObjectRef
from docrelay.models import API_VERSION, ConnectedAccount, ConnectedAccountStatus
from docrelay.models.conditions import READY, Condition, ConditionStatus, find_condition
from docrelay.pipedream import ConnectError, NotFound
from docrelay.pipedream.credentials import ClientCache, CredentialsError, credentials_from_secret
from docrelay.reconcile.accounts import AccountCheck, account_status, needs_check, status_patch
from docrelay.settings import OperatorSettings

log = logging.getLogger("docrelay.accounts")

ACCOUNTS_MEMO_KEY = "docrelay.accounts"


class AccountChecker:
    def __init__(self, kube: Kube, settings: OperatorSettings, namespace: str | None) -> None:
        self.kube = kube
        self.settings = settings
        self.namespace = namespace  # None: every namespace
        # Short timeouts: a check must not hold a handler thread for long.
        self.clients = ClientCache(read_timeout=10.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="account-checks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.clients.close()

    def _loop(self) -> None:
        """A round at start, then one per interval."""
        while not self._stop.is_set():
            try:
                for obj in self.kube.list_objects(ACCOUNTS, self.namespace):
                    if self._stop.is_set():
                        return
                    self.check_safely(obj)
            except KubeError as exc:
                log.warning(
                    "account checks: %s; next round in %.0f s",
                    exc,
                    self.settings.account_check_seconds,
                )
            self._stop.wait(self.settings.account_check_seconds)

    def ask(self, account: ConnectedAccount, namespace: str) -> AccountCheck:
        """What Pipedream says about the account; problems in our own words."""
        spec = account.spec
        secret = self.settings.pipedream_secret
        try:
            credentials = credentials_from_secret(
                self.kube.read_secret_data(namespace, secret), secret
            )
        except CredentialsError as exc:
            return AccountCheck(problem=str(exc))
        if spec.project_id and spec.project_id != credentials.project_id:
            return AccountCheck(
                problem=f"the Secret {self.settings.pipedream_secret} holds the credentials of "
                f"another project than {spec.project_id}"
            )
        environment = spec.environment.value if spec.environment else None
        client = self.clients.get(credentials, environment)
        try:
            return AccountCheck(account=client.get_account(spec.account_id))
        except NotFound:
            return AccountCheck(not_found=True)
        except ConnectError as exc:  # messages name the call and the status, masked
            return AccountCheck(problem=str(exc))

    def check(self, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        namespace, name = metadata.get("namespace") or "", metadata.get("name") or ""
        try:
            account = ConnectedAccount.model_validate(obj)
        except ValidationError:
            log.warning(
                "ConnectedAccount %s/%s does not match this operator's API; skipped",
                namespace,
                name,
            )
            return
        check = self.ask(account, namespace)
        status = account_status(account, check, datetime.now(UTC))
        self.kube.patch_status(ACCOUNTS, namespace, name, status_patch(status))
        before = find_condition((account.status or ConnectedAccountStatus()).conditions, READY)
        ready = find_condition(status.conditions, READY)
        if ready is None:
            return
        log.info("ConnectedAccount %s/%s: %s", namespace, name, ready.reason)
        level = health_event(before, ready)
        if level is not None:
            about = ObjectRef(
                API_VERSION, "ConnectedAccount", namespace, name, account.metadata.uid
            )
            post_event(self.kube, about, level, ready.reason, ready.message)

    def check_safely(self, obj: dict[str, Any]) -> None:
        try:
            self.check(obj)
        except KubeError as exc:
            log.warning("account check of %s: %s", (obj.get("metadata") or {}).get("name"), exc)
        except Exception:
            log.exception(
                "account check of %s failed unexpectedly", (obj.get("metadata") or {}).get("name")
            )


def health_event(before: Condition | None, after: Condition) -> str | None:
    """The Event type to post when the account turns broken (Warning) or healthy again
    (Normal); None otherwise: not on every check, and not for an unknown result (a Pipedream
    outage is in the operator's log, not an Event on every account)."""
    if after.status == ConditionStatus.UNKNOWN:
        return None
    if before is not None and (before.status, before.reason) == (after.status, after.reason):
        return None
    if after.status == ConditionStatus.FALSE:
        return "Warning"
    if before is not None and before.status == ConditionStatus.FALSE:
        return "Normal"
    return None


def checker_from_memo(memo: Any) -> AccountChecker | None:
    found = memo.get(ACCOUNTS_MEMO_KEY)
    return found if isinstance(found, AccountChecker) else None


def check_if_new(body: kopf.Body, memo: kopf.Memo) -> None:
    """From the account's watch event: check a spec no check has seen yet."""
    checker = checker_from_memo(memo)
    obj = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status) or None,
    }
    if checker is not None and not body.metadata.get("deletionTimestamp") and needs_check(obj):
        checker.check_safely(obj)


def register(
    registry: kopf.OperatorRegistry, operator_settings: OperatorSettings, watched: Any
) -> None:
    def start(memo: kopf.Memo, **_: Any) -> None:
        from docrelay.handlers.context import from_memo

        checker = AccountChecker(from_memo(memo).kube, operator_settings, watched())
        memo[ACCOUNTS_MEMO_KEY] = checker
        checker.start()

    def stop(memo: kopf.Memo, **_: Any) -> None:
        checker = checker_from_memo(memo)
        if checker is not None:
            checker.stop()

    kopf.on.startup(registry=registry, id="account-checks")(start)
    kopf.on.cleanup(registry=registry, id="account-checks")(stop)
