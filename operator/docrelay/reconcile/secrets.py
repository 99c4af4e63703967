"""IntegrationSecret decisions: seal plaintext at admission; which secret is Active; conditions.

Pure: the handlers pass in the objects and the key ring, and carry out what comes back.
Secret values exist here only as local variables (opened to check, fingerprinted, dropped);
no message, status or exception built here ever contains one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from docrelay.builders.sealing import SEALED_AT_ANNOTATION, SEQUENCE_ANNOTATION
from docrelay.masking import contains_any_form, too_short_to_mask
from docrelay.models.conditions import (
    READY,
    Condition,
    ConditionStatus,
    find_condition,
    set_condition,
)
from docrelay.models.run import SecretVersion
from docrelay.models.secret import MAX_PLAINTEXT, IntegrationSecretStatus, SecretState
from docrelay.sealing import Binding, KeyRing, SealingError
from docrelay.sealing.envelope import MalformedCiphertext, parse

LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
SEALED = "Sealed"  # the condition type: does the value open here?


class Reason:
    SEALED = "Sealed"  # Ready: opens, Active
    OPENED = "Opened"  # Sealed: opens with a key this install holds, for this place
    SUPERSEDED = "Superseded"
    NOT_SEALED = "NotSealed"
    KEYS_UNAVAILABLE = "KeysUnavailable"
    # the sealing errors' own reasons: BindingMismatch, Tampered, UnknownKey, Malformed


# What to do about each sealing error; appended to the error's own (safe) message.
ADVICE = {
    "BindingMismatch": "a sealed value opens only in the namespace, integration and key it was "
    "sealed for; seal it again with `docrelay seal KEY --integration NAME -n NAMESPACE`",
    "Tampered": "seal the value again with `docrelay seal` and apply the new manifest",
    "UnknownKey": "restore this install's sealing keys from their backup (docs/secrets.md), "
    "or seal the value again with `docrelay seal`",
    "Malformed": "seal the value again with `docrelay seal` and apply the new manifest",
}


# --- admission: plaintext in, ciphertext out ------------------------------------------------


class PlaintextRefused(Exception):
    """The object cannot be admitted; the message is ours and never holds the value."""


@dataclass(frozen=True)
class SealPatch:
    """What the mutating webhook changes: spec fields and metadata (None removes)."""

    spec: dict[str, str | None]
    annotations: dict[str, str | None]
    labels: dict[str, str | None]


def seal_plaintext(
    obj: Mapping[str, Any], namespace: str, ring: KeyRing | None, now: datetime
) -> SealPatch | None:
    """Seal `spec.value` of an IntegrationSecret under admission; None if it holds none.

    Also scrubs the metadata: kubectl's last-applied-configuration (which copies the applied
    manifest, plaintext included) is rewritten to the sealed form, and any other annotation
    or label holding the value in any form is removed.
    """
    spec = obj.get("spec") or {}
    value = spec.get("value")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise PlaintextRefused("spec.value must be a non-empty string")
    integration, key = spec.get("integration"), spec.get("key")
    if not isinstance(integration, str) or not integration or not isinstance(key, str) or not key:
        raise PlaintextRefused("spec.integration and spec.key are required to seal spec.value")
    if not namespace:
        raise PlaintextRefused("the object has no namespace to seal spec.value for")
    if too_short_to_mask(value):
        raise PlaintextRefused(
            "spec.value is too short: values under 4 characters cannot be masked in run logs"
        )
    if len(value.encode()) > MAX_PLAINTEXT:
        raise PlaintextRefused(f"spec.value is longer than {MAX_PLAINTEXT} bytes")
    if ring is None:
        raise PlaintextRefused(
            "the operator has not loaded its sealing keys yet; try again shortly, or seal on "
            "your machine with `docrelay seal`"
        )
    try:
        sealed, key_id = ring.seal(Binding(namespace, integration, key), value.encode())
    except SealingError as exc:
        raise PlaintextRefused(f"spec.value could not be sealed: {exc}") from None

    metadata = obj.get("metadata") or {}
    annotations: dict[str, str | None] = {
        SEALED_AT_ANNOTATION: now.astimezone(UTC).replace(microsecond=0).isoformat()
    }
    for name, text in (metadata.get("annotations") or {}).items():
        if name == LAST_APPLIED_ANNOTATION:
            rewritten = _sealed_last_applied(str(text), sealed, key_id)
            if rewritten is None or contains_any_form(rewritten, [value]):
                annotations[name] = None
            elif rewritten != text:
                annotations[name] = rewritten
        elif name != SEALED_AT_ANNOTATION and contains_any_form(str(text), [value]):
            annotations[name] = None
    labels: dict[str, str | None] = {
        name: None
        for name, text in (metadata.get("labels") or {}).items()
        if contains_any_form(str(text), [value])
    }
    return SealPatch(
        spec={"value": None, "encryptedValue": sealed, "keyId": key_id},
        annotations=annotations,
        labels=labels,
    )


def _sealed_last_applied(text: str, sealed: str, key_id: str) -> str | None:
    """kubectl's copy of the applied manifest, with the sealed value in place of the plaintext;
    None if it cannot be read (the caller then drops it)."""
    try:
        applied = json.loads(text)
    except ValueError:
        return None
    if not isinstance(applied, dict):
        return None
    spec = applied.get("spec")
    if isinstance(spec, dict) and "value" in spec:
        del spec["value"]
        spec["encryptedValue"] = sealed
        spec["keyId"] = key_id
    return json.dumps(applied, separators=(",", ":"), sort_keys=True) + "\n"


# --- admission: the sequence that orders the secrets of one key ---------------------------------


class SequenceRefused(Exception):
    """An UPDATE or CREATE that would set the admission sequence itself; our message."""


def next_sequence(last: int, now_ns: int) -> int:
    """The admission sequence after `last`: the wall clock in nanoseconds, or one more than
    `last` when the clock has not moved on (or went back). Strictly increasing within one
    process; across restarts it follows the wall clock."""
    return max(now_ns, last + 1)


def sequence_of(obj: Mapping[str, Any] | None) -> str | None:
    """The admission sequence annotation of a raw object, as stored (None: not stamped)."""
    if not obj:
        return None
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(SEQUENCE_ANNOTATION)
    return value if isinstance(value, str) else None


def _parse_sequence(text: str | None) -> int | None:
    # ASCII digits only: str.isdigit() also accepts e.g. "²", which int() refuses.
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 30:
        return None
    return int(text)


def stamp_patch(
    operation: str, obj: Mapping[str, Any], old: Mapping[str, Any] | None, issue: Callable[[], int]
) -> dict[str, str] | None:
    """The annotations the mutating webhook writes; None when it leaves the object alone.

    CREATE: a fresh sequence from `issue()`, over any value the user wrote. UPDATE: a
    sequence the update removed (e.g. `kubectl replace`, or a server-side apply whose
    manager owned it) is put back as it was; a changed one is left to the validating check.
    """
    if operation == "CREATE":
        return {SEQUENCE_ANNOTATION: str(issue())}
    before = sequence_of(old)
    if operation == "UPDATE" and before is not None and sequence_of(obj) is None:
        return {SEQUENCE_ANNOTATION: before}
    return None


SEQUENCE_IS_OURS = (
    f"the annotation {SEQUENCE_ANNOTATION} is the operator's admission sequence (it orders "
    "the secrets of one key): it cannot be set or changed. Remove it from your manifest"
)


def check_sequence(
    operation: str,
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    issued: Callable[[str], bool],
) -> None:
    """The validating webhook's check of the admission sequence: on CREATE it must be one this
    process issued (`issued(text)`), never a value the user wrote that got past the mutating
    webhook; an UPDATE must leave it as it was (not add, change or remove it)."""
    now = sequence_of(obj)
    if operation == "CREATE":
        if now is not None and not issued(now):
            raise SequenceRefused(SEQUENCE_IS_OURS)
    elif operation == "UPDATE" and now != sequence_of(old):
        raise SequenceRefused(SEQUENCE_IS_OURS)


def refuse_stored_plaintext(obj: Mapping[str, Any]) -> None:
    """The validating webhook's check: plaintext that got past sealing is refused."""
    if (obj.get("spec") or {}).get("value") is not None:
        raise PlaintextRefused(
            "spec.value (plaintext) is never stored: the sealing webhook did not seal it. "
            "Seal the value with `docrelay seal` and apply encryptedValue instead"
        )


# --- reconcile: which secret is Active, and does it open ---------------------------------------


@dataclass(frozen=True)
class SecretInfo:
    """One IntegrationSecret as the decisions need it (never its plaintext)."""

    name: str
    namespace: str
    integration: str
    key: str
    created: datetime
    generation: int | None
    encrypted_value: str | None
    key_id: str | None
    has_plaintext: bool
    sealed_at: datetime | None
    status: IntegrationSecretStatus
    sequence: int | None = None  # the admission sequence; None: created before it existed

    @property
    def binding(self) -> Binding:
        return Binding(self.namespace, self.integration, self.key)


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def secret_info(obj: Mapping[str, Any]) -> SecretInfo:
    """Read what the decisions need from a raw object (spec.value is only tested for)."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    try:
        status = IntegrationSecretStatus.model_validate(obj.get("status") or {})
    except ValueError:
        status = IntegrationSecretStatus()  # unreadable old status: start afresh
    encrypted = spec.get("encryptedValue")
    key_id = spec.get("keyId")
    return SecretInfo(
        name=str(metadata.get("name", "")),
        namespace=str(metadata.get("namespace", "")),
        integration=str(spec.get("integration", "")),
        key=str(spec.get("key", "")),
        created=_time(metadata.get("creationTimestamp")) or datetime(1970, 1, 1, tzinfo=UTC),
        generation=metadata.get("generation"),
        encrypted_value=encrypted if isinstance(encrypted, str) else None,
        key_id=key_id if isinstance(key_id, str) else None,
        has_plaintext=spec.get("value") is not None,
        sealed_at=_time((metadata.get("annotations") or {}).get(SEALED_AT_ANNOTATION)),
        status=status,
        sequence=_parse_sequence(sequence_of(obj)),
    )


def _ns(moment: datetime) -> int:
    """A moment as nanoseconds since the epoch, exactly (no float rounding)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def order_key(secret: SecretInfo) -> tuple[int, int, str]:
    """Where a secret stands among those of its key; a larger key is newer.

    The admission sequence first (a CREATE admitted after another one finished always has a
    larger one). A secret without one (created before the sequence existed, or while the
    operator was down) stands at its creationTimestamp in nanoseconds, before any stamped
    secret admitted at or after that second began. The name breaks the last ties (names are
    unique in a namespace), so the order is total.
    """
    if secret.sequence is not None:
        return (secret.sequence, 1, secret.name)
    return (_ns(secret.created), 0, secret.name)


def newest_first(secrets: Iterable[SecretInfo]) -> list[SecretInfo]:
    """The secrets of one key, newest (the one that is Active) first: see `order_key`."""
    return sorted(secrets, key=order_key, reverse=True)


@dataclass(frozen=True)
class Opened:
    ok: bool
    reason: str
    message: str
    fingerprint: str | None = None
    key_id: str | None = None


def check_secret(secret: SecretInfo, ring: KeyRing | None) -> Opened:
    """Open the value in memory to prove it opens here; keep only its fingerprint."""
    if secret.has_plaintext:
        return Opened(
            False,
            Reason.NOT_SEALED,
            "spec.value holds plaintext: it was stored without the sealing webhook. Delete "
            "this object, check the operator's webhook configuration, and seal the value with "
            "`docrelay seal`",
        )
    if secret.encrypted_value is None:
        return Opened(False, "Malformed", "spec.encryptedValue is missing; " + ADVICE["Malformed"])
    try:
        envelope_key_id = parse(secret.encrypted_value).key_id
    except MalformedCiphertext as exc:
        return Opened(False, exc.reason, f"{exc}; {ADVICE[exc.reason]}")
    if ring is None:
        return Opened(
            False,
            Reason.KEYS_UNAVAILABLE,
            "the operator has not loaded its sealing keys yet; it checks again when they load",
            key_id=envelope_key_id,
        )
    try:
        plaintext = ring.open(secret.binding, secret.encrypted_value)
    except SealingError as exc:
        advice = ADVICE.get(exc.reason, "seal the value again with `docrelay seal`")
        return Opened(False, exc.reason, f"{exc}; {advice}", key_id=envelope_key_id)
    fingerprint = ring.fingerprint(secret.binding, plaintext)
    del plaintext
    return Opened(
        True,
        Reason.OPENED,
        f"opens with sealing key {envelope_key_id} for {secret.binding}",
        fingerprint=fingerprint,
        key_id=envelope_key_id,
    )


def _condition(
    kind: str, status: ConditionStatus, reason: str, message: str, generation: int | None
) -> Condition:
    return Condition(
        type=kind,
        status=status,
        observed_generation=generation,
        last_transition_time=datetime(1970, 1, 1, tzinfo=UTC),  # set_condition decides
        reason=reason,
        message=message,
    )


def plan_secret_statuses(
    secrets: Sequence[SecretInfo], ring: KeyRing | None, now: datetime
) -> dict[str, IntegrationSecretStatus]:
    """The status of every given secret of one namespace, by name.

    Per integration and key, the newest secret is Active and the others Superseded by it.
    The Active one is Ready only if it opens; a broken newest secret is not skipped in favour
    of an older one (the user replaced the value on purpose; SecretsReady then says why).
    """
    groups: dict[tuple[str, str], list[SecretInfo]] = {}
    for secret in secrets:
        groups.setdefault((secret.integration, secret.key), []).append(secret)
    planned: dict[str, IntegrationSecretStatus] = {}
    for group in groups.values():
        ordered = newest_first(group)
        active = ordered[0]
        for secret in ordered:
            planned[secret.name] = _status(secret, active, check_secret(secret, ring), now)
    return planned


def _status(
    secret: SecretInfo, active: SecretInfo, opened: Opened, now: datetime
) -> IntegrationSecretStatus:
    generation = secret.generation
    is_active = secret.name == active.name
    if opened.ok:
        sealed = _condition(SEALED, ConditionStatus.TRUE, Reason.OPENED, opened.message, generation)
    elif opened.reason == Reason.KEYS_UNAVAILABLE:
        sealed = _condition(
            SEALED, ConditionStatus.UNKNOWN, opened.reason, opened.message, generation
        )
    else:
        sealed = _condition(
            SEALED, ConditionStatus.FALSE, opened.reason, opened.message, generation
        )

    if not is_active:
        ready = _condition(
            READY,
            ConditionStatus.FALSE,
            Reason.SUPERSEDED,
            f"superseded by {active.name}, a newer secret for integration {secret.integration} "
            f"and key {secret.key}; runs use that one. Delete this one when it is no longer "
            "needed",
            generation,
        )
    elif opened.ok:
        ready = _condition(
            READY,
            ConditionStatus.TRUE,
            Reason.SEALED,
            f"active for integration {secret.integration} and key {secret.key}; " + opened.message,
            generation,
        )
    else:
        ready = _condition(READY, sealed.status, opened.reason, opened.message, generation)

    conditions: list[Condition] = list(secret.status.conditions)
    for condition in (ready, sealed):
        conditions = set_condition(conditions, condition, now)
    return IntegrationSecretStatus(
        observed_generation=generation,
        conditions=tuple(conditions),
        state=SecretState.ACTIVE if is_active else SecretState.SUPERSEDED,
        superseded_by=None if is_active else active.name,
        fingerprint=opened.fingerprint,
        sealed_at=secret.sealed_at or secret.created,
        key_id=opened.key_id or secret.key_id,
    )


def status_patch(old: Mapping[str, Any] | None, new: IntegrationSecretStatus) -> dict[str, Any]:
    """A merge patch from `old` to `new` ({} when nothing changed); absent fields are nulled."""
    wanted = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    current = dict(old or {})
    patch: dict[str, Any] = {k: v for k, v in wanted.items() if current.get(k) != v}
    patch.update({k: None for k in current if k not in wanted})
    return patch


def usable_secret_keys(objects: Iterable[Mapping[str, Any]], integration: str) -> frozenset[str]:
    """The keys of `integration` whose Active secret opens (Ready=True, status up to date):
    what the Integration's SecretsReady counts."""
    keys = set()
    for obj in objects:
        secret = secret_info(obj)
        if secret.integration != integration or not secret.key:
            continue
        status = secret.status
        ready = find_condition(status.conditions, READY)
        if (
            status.state is SecretState.ACTIVE
            and ready is not None
            and ready.status is ConditionStatus.TRUE
            and status.observed_generation == secret.generation
        ):
            keys.add(secret.key)
    return frozenset(keys)


# --- pruning: superseded secrets no run still needs -------------------------------------------


@dataclass(frozen=True)
class RunUse:
    """What pruning needs of one IntegrationRun: whose it is, whether it ended, and the
    IntegrationSecrets its last attempt received (status.secretVersions)."""

    integration: str
    finished: bool
    secrets: frozenset[str]


@dataclass(frozen=True)
class Prune:
    """A superseded secret to delete, and what the Event about it says (names, fingerprints)."""

    name: str
    integration: str
    key: str
    fingerprint: str | None
    superseded_by: str
    active_fingerprint: str | None

    def message(self, grace: timedelta) -> str:
        return (
            f"deleted the superseded IntegrationSecret {self.name} (key {self.key}, fingerprint "
            f"{self.fingerprint or 'none'}): superseded by {self.superseded_by} (fingerprint "
            f"{self.active_fingerprint or 'none'}) for over {_duration(grace)}, and no "
            "unfinished run received it"
        )


def _duration(grace: timedelta) -> str:
    seconds = int(grace.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _active_and_ready(secret: SecretInfo) -> bool:
    ready = find_condition(secret.status.conditions, READY)
    return (
        secret.status.state is SecretState.ACTIVE
        and ready is not None
        and ready.status is ConditionStatus.TRUE
        and secret.status.observed_generation == secret.generation
    )


def plan_prunes(
    secrets: Sequence[SecretInfo], runs: Iterable[RunUse], now: datetime, grace: timedelta
) -> list[Prune]:
    """The superseded secrets of one namespace to delete now.

    A secret goes when all hold: a newer secret for its integration and key exists and is
    Active and Ready (its status says so for its current generation: while the newest does not
    open, the older ones stay, so deleting the newest still brings one back); the newer secret
    right after it was created at least `grace` ago; and no run of the integration that has
    not finished received it (its log is masked with that value when the attempt ends; a
    retry re-reads the Active secret, so a queued run needs no older one).
    """
    held: dict[str, set[str]] = {}
    for run in runs:
        if not run.finished:
            held.setdefault(run.integration, set()).update(run.secrets)
    groups: dict[tuple[str, str], list[SecretInfo]] = {}
    for secret in secrets:
        groups.setdefault((secret.integration, secret.key), []).append(secret)
    prunes: list[Prune] = []
    for (integration, key), group in sorted(groups.items()):
        ordered = newest_first(group)
        active = ordered[0]
        if len(ordered) < 2 or not _active_and_ready(active):
            continue
        in_use = held.get(integration, set())
        for newer, secret in pairwise(ordered):
            if now - newer.created < grace or secret.name in in_use:
                continue
            prunes.append(
                Prune(
                    name=secret.name,
                    integration=integration,
                    key=key,
                    fingerprint=secret.status.fingerprint,
                    superseded_by=active.name,
                    active_fingerprint=active.status.fingerprint,
                )
            )
    return prunes


def active_by_key(objects: Iterable[dict[str, Any]], integration: str) -> dict[str, dict[str, Any]]:
    """Among IntegrationSecret objects, the Active and Ready one of each key of `integration`."""
    found: dict[str, dict[str, Any]] = {}
    for obj in objects:
        info = secret_info(obj)
        if info.integration != integration or not info.key:
            continue
        ready = find_condition(info.status.conditions, READY)
        if (
            info.status.state is SecretState.ACTIVE
            and ready is not None
            and ready.status is ConditionStatus.TRUE
        ):
            found[info.key] = obj
    return found


class UnusableSecret(Exception):
    """A secret a run needs is missing or does not open; the message names no value."""


def open_sealed(
    ring: KeyRing, objects: Mapping[str, Mapping[str, Any]]
) -> dict[str, tuple[bytes, SecretVersion]]:
    """Each IntegrationSecret's plaintext (in memory only) and the version a run records."""
    opened = {}
    for key, obj in objects.items():
        info = secret_info(obj)
        if info.encrypted_value is None:
            continue
        try:
            plaintext = ring.open(info.binding, info.encrypted_value)
        except SealingError as exc:  # its message names no value (docrelay.sealing)
            raise UnusableSecret(
                f"the IntegrationSecret {info.name} does not open: {exc}"
            ) from None
        fingerprint = info.status.fingerprint or ring.fingerprint(info.binding, plaintext)
        version = SecretVersion(key=key, secret=info.name, fingerprint=fingerprint)
        opened[key] = (plaintext, version)
    return opened


def openable_values(ring: KeyRing, objects: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """The plaintext of every IntegrationSecret that opens, whatever its state (Pending,
    Active, Superseded): what a masker of text a person wrote must hide. One that does not
    open is skipped (no one can be shown its value by us either)."""
    values = []
    for obj in objects:
        info = secret_info(obj)
        if info.encrypted_value is None:
            continue
        try:
            values.append(ring.open(info.binding, info.encrypted_value))
        except SealingError:
            continue
    return values


def received_secrets(
    objects: Iterable[Mapping[str, Any]],
    versions: Sequence[SecretVersion],
    active: Mapping[str, Mapping[str, Any]],
) -> dict[str, Mapping[str, Any]]:
    """The IntegrationSecret of each key a run received (by the name its status records; the
    key's active one if that was deleted since). UnusableSecret if one is gone altogether."""
    by_name = {o["metadata"]["name"]: o for o in objects}
    chosen = {v.key: by_name.get(v.secret) or active.get(v.key) for v in versions}
    if any(o is None for o in chosen.values()):
        raise UnusableSecret("a secret the run received is gone")
    return {key: obj for key, obj in chosen.items() if obj is not None}


def pick_keys(
    active: Mapping[str, Mapping[str, Any]], keys: Iterable[str], hint: str = ""
) -> dict[str, Mapping[str, Any]]:
    """The active IntegrationSecret of each of `keys`; UnusableSecret naming those missing."""
    wanted = set(keys)
    if missing := sorted(wanted - set(active)):
        raise UnusableSecret("no usable IntegrationSecret for " + ", ".join(missing) + hint)
    return {k: v for k, v in active.items() if k in wanted}
