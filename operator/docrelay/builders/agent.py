"""What the agent creates: revisions of the code it wrote, and the test runs that try them."""

from __future__ import annotations

from typing import Any

from docrelay.builders.revision import (
    INTEGRATION_LABEL,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    code_config_map_name,
    code_digest,
    owner_reference,
    revision_name,
)
from docrelay.builders.run import new_run
from docrelay.models.common import API_VERSION, Runtime
from docrelay.models.revision import CODE_KEY, SourceType

AGENT_MANAGER = "docrelay-agent"
AGENT_TEST_LABEL = "docrelay.io/agent-test"


def build_agent_revision(
    *,
    integration: str,
    integration_uid: str,
    code: str,
    runtime: Runtime,
    source: SourceType,
    model: str,
    prompt_hash: str,
    user: str | None = None,
    fix_of_run: str | None = None,
    parent: str | None = None,
) -> dict[str, Any]:
    """An IntegrationRevision the agent wrote (source Agent, or Fix of a run), owned by the
    Integration. Named like every revision, from the code and runtime."""
    name = revision_name(integration, code, runtime)
    source_spec: dict[str, Any] = {"type": source.value, "model": model, "promptHash": prompt_hash}
    if user:
        source_spec["user"] = user
    if fix_of_run:
        source_spec["fixOfRun"] = fix_of_run
    spec: dict[str, Any] = {
        "integration": integration,
        "codeConfigMap": {"name": code_config_map_name(name), "key": CODE_KEY},
        "codeHash": code_digest(code),
        "runtime": runtime.model_dump(mode="json", by_alias=True, exclude_none=True),
        "source": source_spec,
    }
    if parent:
        spec["parent"] = parent
    return {
        "apiVersion": API_VERSION,
        "kind": "IntegrationRevision",
        "metadata": {
            "name": name,
            "labels": {INTEGRATION_LABEL: integration, MANAGED_BY_LABEL: AGENT_MANAGER},
            "ownerReferences": [
                owner_reference(API_VERSION, "Integration", integration, integration_uid)
            ],
        },
        "spec": spec,
    }


def agent_test_event_id(revision: str, round_: int = 0, live: bool = False) -> str:
    """The made-up event id of a revision's test runs: one run per revision, document and
    round (0: the agent's own first test; later rounds are a user's Test or LiveTest turn)."""
    kind = "live" if live else "test"
    return f"agent-{kind}-{revision}" + (f"-{round_}" if round_ else "")


def build_test_run(
    *,
    namespace: str,
    integration: str,
    revision: str,
    document: str,
    trigger: str,
    dry_run: bool = True,
    round_: int = 0,
) -> dict[str, Any]:
    """A test run of `revision` on `document`, named from both and the round (creating it twice
    is a 409). Dry unless a user asked for a live test (docs/runner.md, "Dry runs")."""
    event_id = agent_test_event_id(revision, round_, live=not dry_run)
    labels = {
        INTEGRATION_LABEL: integration,
        REVISION_LABEL: revision,
        AGENT_TEST_LABEL: "true",
        MANAGED_BY_LABEL: AGENT_MANAGER,
    }
    return new_run(
        namespace, integration, event_id, document, trigger,
        metadata={"labels": labels},
        spec={"test": True, "dryRun": dry_run, "revision": revision},
    )  # fmt: skip
