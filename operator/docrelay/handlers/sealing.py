"""Registers everything of sealed secrets: keys at startup, the webhooks, the secret checks."""

from __future__ import annotations

from typing import Any

import kopf

from docrelay.handlers import secrets, webhooks
from docrelay.handlers.context import from_memo
from docrelay.handlers.keys import sealing_from_memo, start_sealing
from docrelay.settings import OperatorSettings

PRUNER_MEMO_KEY = "docrelay.secret-pruner"


def register_sealing(registry: kopf.OperatorRegistry, operator_settings: OperatorSettings) -> None:
    def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        kube = from_memo(memo).kube
        sealing = start_sealing(memo, kube, operator_settings)
        if sealing.watched_namespace:
            # Keys that load only after a failed first try: re-check what waited for them.
            namespaces = [sealing.watched_namespace]
            sealing.on_first_load.append(lambda: secrets.resync_all(kube, namespaces, sealing))
        webhooks.configure_webhook_server(settings, sealing)
        pruner = secrets.SecretPruner(kube, operator_settings, sealing.watched_namespace, memo)
        memo[PRUNER_MEMO_KEY] = pruner
        pruner.start()

    def stop(memo: kopf.Memo, **_: Any) -> None:
        sealing = sealing_from_memo(memo)
        if sealing is not None:
            sealing.stop()
        pruner = memo.get(PRUNER_MEMO_KEY)
        if isinstance(pruner, secrets.SecretPruner):
            pruner.stop()

    kopf.on.startup(registry=registry, id="sealing-keys")(start)
    kopf.on.cleanup(registry=registry, id="sealing-keys")(stop)
    webhooks.register(registry)
    secrets.register(registry)
