"""Opening the run's sealed env vars: the one-run key from the broker (once), then each
`DOCRELAY_SEALED_KEYS` variable decrypted in place into `os.environ`."""

from __future__ import annotations

import base64
import binascii
import sys

from docrelay.runner import contract
from docrelay.runner.brokerclient import BrokerClient, BrokerError
from docrelay.runner.envcrypt import EnvDecryptError, decrypt_value

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: not imported at the run's start
    from collections.abc import Mapping, MutableMapping


class SecretsProblem(Exception):
    """The run's secrets cannot be opened; the message holds no value, key or token."""

    def __init__(self, message: str, error_class: str, kind: str = "SecretsError") -> None:
        super().__init__(message)
        self.error_class = error_class
        self.kind = kind


def sealed_names(environ: Mapping[str, str]) -> list[str]:
    return [n for n in environ.get(contract.ENV_SEALED_KEYS, "").split(",") if n.strip()]


def _fetch_key(client: BrokerClient, attempt: int) -> tuple[bytes, str]:
    try:
        answer = client.request("POST", "/v1/broker/key")
    except BrokerError as exc:
        status = exc.status_code
        retryable = status is None or status == 429 or status >= 500
        raise SecretsProblem(
            f"the broker did not release the run's key: {exc}",
            contract.TRANSIENT_ERROR if retryable else contract.CONFIGURATION_ERROR,
            "BrokerError",
        ) from None
    try:
        key = base64.urlsafe_b64decode(str(answer["key"]))
        run_uid = str(answer["runUid"])
        released_for = int(answer["attempt"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise SecretsProblem(
            "the broker's key answer is malformed", contract.CONFIGURATION_ERROR, "BrokerError"
        ) from None
    if released_for != attempt or len(key) != 32:
        raise SecretsProblem(
            "the broker released a key for another attempt",
            contract.CONFIGURATION_ERROR,
            "BrokerError",
        )
    return key, run_uid


def open_secrets(
    environ: Mapping[str, str], target: MutableMapping[str, str], attempt: int
) -> list[str]:
    """Decrypt every sealed variable into `target`; return the plaintext values (to mask).

    Without a broker URL (a cluster set up before the broker existed) the variables keep
    their ciphertext, as they did then, and a notice says so."""
    names = sealed_names(environ)
    if not names:
        return []
    if not environ.get(contract.ENV_BROKER_URL):
        print(
            "docrelay runner: no broker configured; sealed variables stay encrypted",
            file=sys.stderr,
        )
        return []
    try:
        client = BrokerClient.from_env(environ)
    except BrokerError as exc:
        raise SecretsProblem(str(exc), contract.CONFIGURATION_ERROR, "BrokerError") from None
    key, run_uid = _fetch_key(client, attempt)
    values: list[str] = []
    for name in names:
        sealed = environ.get(name)
        if sealed is None:
            raise SecretsProblem(
                f"the secret {name} is missing from the run", contract.CONFIGURATION_ERROR
            )
        try:
            plaintext = decrypt_value(key, run_uid, attempt, name, sealed)
        except EnvDecryptError as exc:
            raise SecretsProblem(str(exc), contract.CONFIGURATION_ERROR) from None
        value = plaintext.decode("utf-8", "surrogateescape")
        target[name] = value
        values.append(value)
    del key  # the key is needed no longer; the values live in os.environ only
    return values
