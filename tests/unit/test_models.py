"""The pydantic models: examples parse, bad input is refused with a clear message, conditions
keep their semantics, update rules match the CRDs' transition rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from docrelay.models import (
    KINDS,
    Condition,
    ConditionStatus,
    Integration,
    IntegrationRevisionSpec,
    IntegrationRunSpec,
    IntegrationSecret,
    IntegrationSecretSpec,
    IntegrationSpec,
    find_condition,
    set_condition,
)
from docrelay.models.common import Runtime, parse_quantity
from docrelay.models.run import RunPhase
from tests.cluster.test_api_validation import (
    BASES,
    DELETE,
    INVALID_CASES,
    Case,
    manifest,
    patched,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_parses(path: Path) -> None:
    document = yaml.safe_load(path.read_text())

    parsed = KINDS[document["kind"]].model_validate(document)

    assert parsed.metadata.name == document["metadata"]["name"]


def test_every_kind_has_an_example() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in EXAMPLES}
    assert kinds == set(KINDS)


# The same manifests the API server must reject (tests/cluster): the models refuse them too.
@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_rejected_by_the_models(case: Case) -> None:
    with pytest.raises(ValidationError) as caught:
        KINDS[case.kind].model_validate(case.manifest)
    assert case.model_error in str(caught.value)


@pytest.mark.parametrize("kind", sorted(BASES))
def test_the_base_manifest_of_the_invalid_table_is_valid(kind: str) -> None:
    KINDS[kind].model_validate(manifest(kind))


VALID_VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("timeout-at-max", "Integration", {"spec": {"timeoutSeconds": 3600}}),
    ("instructions-only", "Integration", {"spec": {"code": DELETE, "instructions": "Export it."}}),
    ("name-at-budget", "Integration", {"metadata": {"name": "a" * 40}}),
    ("wildcard-host", "Integration", {"spec": {"egress": {"hosts": ["*.example.com"]}}}),
    (
        "host-with-port",
        "Integration",
        {"spec": {"egress": {"hosts": ["api.example.com:8443", "*.example.com:65535"]}}},
    ),
    ("ipv6-cidr", "Integration", {"spec": {"egress": {"cidrs": ["2001:db8::/32"]}}}),
    ("nodejs-20", "Integration", {"spec": {"runtime": {"nodejs": "20"}}}),
    ("nodejs-22-image", "Integration", {"spec": {"runtime": {"nodejs": "22", "image": "r/n:1"}}}),
    ("nodejs-24", "Integration", {"spec": {"runtime": {"nodejs": "24"}}}),
    ("nodejs-26", "Integration", {"spec": {"runtime": {"nodejs": "26"}}}),
    (
        "integer-cpu",
        "Integration",
        {"spec": {"resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": 1}}}},
    ),
    (
        "equal-request-and-limit",
        "Integration",
        {"spec": {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1024Mi"}}}},
    ),
    (
        "retry-cap-equals-base",
        "Integration",
        {"spec": {"retry": {"backoffBaseSeconds": 60, "backoffCapSeconds": 60}}},
    ),
    ("secret-name-not-reserved", "Integration", {"spec": {"secrets": ["MY_PYTHON_KEY"]}}),
    (
        "fix-revision",
        "IntegrationRevision",
        {"spec": {"source": {"type": "Fix", "model": "m", "fixOfRun": "invoices-1"}}},
    ),
    (
        "plaintext-secret",
        "IntegrationSecret",
        {"spec": {"encryptedValue": DELETE, "keyId": DELETE, "value": "s3cr3t"}},
    ),
    ("cancelled-test-run", "IntegrationRun", {"spec": {"test": True, "cancel": True}}),
)


@pytest.mark.parametrize(
    ("variant", "kind", "patch"), VALID_VARIANTS, ids=[v[0] for v in VALID_VARIANTS]
)
def test_valid_variant_is_accepted(variant: str, kind: str, patch: dict[str, Any]) -> None:
    KINDS[kind].model_validate(manifest(kind, patch))


def test_defaults_fill_the_minimal_integration() -> None:
    spec = Integration.model_validate(manifest("Integration")).spec

    assert spec.timeout_seconds == 300
    assert (spec.retry.max_attempts, spec.retry.backoff_base_seconds) == (3, 30)
    assert spec.retry.backoff_cap_seconds == 3600
    assert spec.max_concurrency == 5
    assert spec.deploy_policy == "Manual"
    assert spec.runtime.python == "3.12"
    assert (spec.runtime.language, spec.runtime.key) == ("python", "python3.12")
    assert spec.suspend is False


def test_a_nodejs_runtime_names_no_python_and_keeps_revision_names_of_python_ones() -> None:
    node = IntegrationSpec.model_validate(
        {**BASES["Integration"]["spec"], "runtime": {"nodejs": "22"}}
    ).runtime
    assert (node.language, node.version, node.key) == ("nodejs", "22", "nodejs22")
    assert node.python is None
    assert node.model_dump(mode="json", by_alias=True, exclude_none=True) == {"nodejs": "22"}
    # An existing manifest without a runtime dumps as it did before Node.js existed, so its
    # revision name (a hash of code and runtime) does not change.
    python = IntegrationSpec.model_validate(BASES["Integration"]["spec"]).runtime
    assert python.model_dump(mode="json", by_alias=True, exclude_none=True) == {"python": "3.12"}


def test_nodejs_20_is_still_accepted_and_named_end_of_life_the_current_lines_are_not() -> None:
    def runtime(version: str) -> Runtime:
        return IntegrationSpec.model_validate(
            {**BASES["Integration"]["spec"], "runtime": {"nodejs": version}}
        ).runtime

    assert runtime("20").end_of_life == "April 2026"
    assert [runtime(v).key for v in ("22", "24", "26") if runtime(v).end_of_life is None] == [
        "nodejs22", "nodejs24", "nodejs26"]
    assert IntegrationSpec.model_validate(BASES["Integration"]["spec"]).runtime.end_of_life is None
    # What `kubectl explain integrations.spec.runtime.nodejs` prints (the CRD's description).
    described = " ".join(str(Runtime.model_fields["nodejs"].description).split())
    assert '("20", "22", "24" or "26")' in described
    assert '"20" is past its end of life (April 2026, no more security fixes)' in described


def test_models_speak_camel_case_and_accept_python_names() -> None:
    by_alias = IntegrationSpec.model_validate(BASES["Integration"]["spec"])
    by_name = IntegrationSpec(
        workspace="mEFayXdO",
        document_type="tVpGRBWd",
        trigger="DocumentValidated",  # type: ignore[arg-type]
        code="def lambda_handler(event, context):\n    pass\n",
    )

    assert by_alias == by_name
    dumped = by_name.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert {"documentType", "timeoutSeconds", "maxConcurrency"} <= dumped.keys()


def test_models_are_frozen() -> None:
    spec = IntegrationSpec.model_validate(BASES["Integration"]["spec"])
    with pytest.raises(ValidationError, match="frozen"):
        spec.timeout_seconds = 10


def test_a_validation_error_never_quotes_a_plaintext_secret() -> None:
    document = manifest("IntegrationSecret", {"spec": {"value": "hunter2-plaintext"}})

    with pytest.raises(ValidationError) as caught:
        IntegrationSecret.model_validate(document)

    assert "set exactly one of value and encryptedValue" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value)


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        (1, Decimal(1)),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        ("128Mi", Decimal(128 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("2e3", Decimal(2000)),
        (".5k", Decimal(500)),
    ],
)
def test_parse_quantity(quantity: int | str, value: Decimal) -> None:
    assert parse_quantity(quantity) == value


# --- Update rules: the Python twin of the CRDs' transition rules ---------------------------------

RUN = IntegrationRunSpec.model_validate(BASES["IntegrationRun"]["spec"])
REVISION = IntegrationRevisionSpec.model_validate(BASES["IntegrationRevision"]["spec"])
SECRET = IntegrationSecretSpec.model_validate(BASES["IntegrationSecret"]["spec"])

UPDATES: tuple[tuple[str, Any, dict[str, Any], list[str]], ...] = (
    ("run-cancel", RUN, {"cancel": True}, []),
    ("run-document", RUN, {"document_identifier": "other"}, ["documentIdentifier is immutable"]),
    ("run-add-revision", RUN, {"revision": "invoices-1"}, ["revision is immutable"]),
    (
        "run-event-and-key",
        RUN,
        {"event_id": "e2", "idempotency_key": "k2"},
        ["eventId is immutable", "idempotencyKey is immutable"],
    ),
    (
        "revision-parent",
        REVISION,
        {"parent": "invoices-0"},
        ["spec is immutable: a changed revision is a new IntegrationRevision"],
    ),
    ("revision-unchanged", REVISION, {}, []),
    ("secret-reseal", SECRET, {"encrypted_value": "AgBzAAAA"}, []),
    ("secret-key", SECRET, {"key": "OTHER_KEY"}, ["key is immutable"]),
)


@pytest.mark.parametrize(("name", "old", "change", "errors"), UPDATES, ids=[u[0] for u in UPDATES])
def test_update_errors(name: str, old: Any, change: dict[str, Any], errors: list[str]) -> None:
    new = old.model_copy(update=change)
    assert new.update_errors(old) == errors


def test_a_cancelled_run_cannot_be_resumed() -> None:
    cancelled = RUN.model_copy(update={"cancel": True})
    assert RUN.update_errors(cancelled) == [
        "a cancelled run cannot be resumed: cancel cannot go back to false"
    ]


def test_transition_rules_name_the_immutable_fields() -> None:
    messages = [r["message"] for r in IntegrationRunSpec.transition_rules()]
    assert "documentIdentifier is immutable" in messages
    assert all(r["fieldPath"].startswith(".") for r in IntegrationRunSpec.transition_rules())
    assert IntegrationRevisionSpec.transition_rules() == [
        {"rule": "self == oldSelf", "message": IntegrationRevisionSpec.immutable_spec_message}
    ]


# --- Conditions ----------------------------------------------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5, microseconds=123)


def condition(type_: str, status: str, reason: str = "R", at: datetime = T0) -> Condition:
    return Condition(
        type=type_, status=ConditionStatus(status), reason=reason, last_transition_time=at
    )


SET_CONDITION_CASES: tuple[
    tuple[str, list[Condition], Condition, list[tuple[str, str, datetime]]], ...
] = (
    (
        "new type is added at now",
        [],
        condition("CodeReady", "True"),
        [("CodeReady", "True", T1.replace(microsecond=0))],
    ),
    (
        "same status keeps the old time",
        [condition("Ready", "True")],
        condition("Ready", "True", "Other", at=T1),
        [("Ready", "True", T0)],
    ),
    (
        "status change moves the time",
        [condition("Ready", "True")],
        condition("Ready", "False"),
        [("Ready", "False", T1.replace(microsecond=0))],
    ),
    (
        "Ready goes first",
        [condition("CodeReady", "True"), condition("SecretsReady", "True")],
        condition("Ready", "True"),
        [
            ("Ready", "True", T1.replace(microsecond=0)),
            ("CodeReady", "True", T0),
            ("SecretsReady", "True", T0),
        ],
    ),
    (
        "others keep their order, new ones go last",
        [condition("Ready", "True"), condition("SecretsReady", "True")],
        condition("AccountsReady", "Unknown"),
        [
            ("Ready", "True", T0),
            ("SecretsReady", "True", T0),
            ("AccountsReady", "Unknown", T1.replace(microsecond=0)),
        ],
    ),
    (
        "replaced in place",
        [
            condition("Ready", "False"),
            condition("CodeReady", "False"),
            condition("Paused", "False"),
        ],
        condition("CodeReady", "True"),
        [
            ("Ready", "False", T0),
            ("CodeReady", "True", T1.replace(microsecond=0)),
            ("Paused", "False", T0),
        ],
    ),
)


@pytest.mark.parametrize(
    ("name", "before", "new", "after"), SET_CONDITION_CASES, ids=[c[0] for c in SET_CONDITION_CASES]
)
def test_set_condition(
    name: str, before: list[Condition], new: Condition, after: list[tuple[str, str, datetime]]
) -> None:
    result = set_condition(before, new, now=T1)
    assert [(c.type, c.status, c.last_transition_time) for c in result] == after


def test_set_condition_takes_reason_message_and_generation_from_the_new_condition() -> None:
    old = condition("Ready", "False", "SecretsMissing")
    new = old.model_copy(
        update={
            "reason": "AccountUnhealthy",
            "message": "xero-finance is dead",
            "observed_generation": 4,
        }
    )

    (result,) = set_condition([old], new, now=T1)

    assert (result.reason, result.message, result.observed_generation) == (
        "AccountUnhealthy",
        "xero-finance is dead",
        4,
    )
    assert result.last_transition_time == T0


def test_set_condition_leaves_its_input_alone() -> None:
    before = [condition("Ready", "True")]
    set_condition(before, condition("Ready", "False"), now=T1)
    assert before == [condition("Ready", "True")]


def test_find_condition() -> None:
    conditions = [condition("Ready", "True"), condition("CodeReady", "False")]
    assert find_condition(conditions, "CodeReady") == conditions[1]
    assert find_condition(conditions, "Paused") is None


def test_a_status_holds_one_condition_per_type() -> None:
    document = patched(
        manifest("Integration"),
        {
            "status": {
                "conditions": [
                    c.model_dump(mode="json", by_alias=True)
                    for c in (condition("Ready", "True"), condition("Ready", "False"))
                ]
            }
        },
    )

    with pytest.raises(ValidationError, match="duplicate condition type 'Ready'"):
        Integration.model_validate(document)


def test_run_phases_know_which_are_final() -> None:
    assert {p for p in RunPhase if p.finished} == {
        RunPhase.SUCCEEDED,
        RunPhase.FAILED,
        RunPhase.TIMED_OUT,
        RunPhase.DEAD_LETTERED,
        RunPhase.CANCELLED,
    }
