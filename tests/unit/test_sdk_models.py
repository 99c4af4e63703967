"""`docrelay.sdk.models.document_model` against the broker's real routes on a local FastAPI app
(authentication stubbed: a fixed token is the run's pod; the platform plays the sample types)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi import FastAPI, Request

from devkit.standins.server import serving
from docrelay import sdk
from docrelay.gateway import broker as b
from docrelay.gateway.settings import GatewaySettings
from docrelay.platform.errors import NotFound
from docrelay.runner import contract
from docrelay.sdk import models

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "projected-token"
CALLER = b.Caller(
    "tenant-a", "pod", "pod-uid-1", "run-1", "run", "run-uid", 1, "orders", "doc-1", False
)


def load(path: str) -> Any:
    return json.loads((EXAMPLES / path).read_text())


INVOICE_TYPE = load("document-types/invoice.json")
RESUME_TYPE = load("document-types/resume.json")
SCHEMAS = {t["identifier"]: t["jsonSchema"] for t in (INVOICE_TYPE, RESUME_TYPE)}


class Kube:
    async def get_json(self, path: str) -> dict[str, Any] | None:
        if path.endswith("/integrations/orders"):
            return {"spec": {"workspace": "ws", "documentType": INVOICE_TYPE["identifier"]}}
        return None


class Platform:
    async def __aenter__(self) -> Platform:
        return self

    async def __aexit__(self, *_: Any) -> None:
        pass

    async def get_document_type_schema(self, identifier: str) -> dict[str, Any]:
        Broker.platform_calls.append(identifier)
        if identifier not in SCHEMAS:
            raise NotFound("no such document type")
        return dict(SCHEMAS[identifier])


class Broker(b.Broker):
    platform_calls: ClassVar[list[str]] = []

    async def authenticate(self, request: Request) -> b.Caller:
        if b.bearer_token(request.headers.get("authorization")) != TOKEN:
            raise b.Refusal(401, "token not accepted")
        return CALLER

    async def _platform(self, namespace: str) -> Any:
        return Platform()


@pytest.fixture
def broker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    settings = GatewaySettings(namespace="tenant-a")
    kube: Any = Kube()
    app = FastAPI()
    b.register(app, settings, kube, Broker(settings, kube))
    Broker.platform_calls = []
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    monkeypatch.setattr(models, "_models", {})  # a fresh process's cache
    monkeypatch.setenv(contract.ENV_BROKER_TOKEN_PATH, str(token))
    event = {"document_identifier": "doc-1", "document_type": INVOICE_TYPE["identifier"]}
    monkeypatch.setenv(contract.ENV_EVENT, json.dumps(event))
    with serving(app) as server:
        monkeypatch.setenv(contract.ENV_BROKER_URL, server.base_url)
        yield


@pytest.mark.usefixtures("broker_env")
def test_the_runs_document_type_as_a_model_cached_per_process() -> None:
    model = models.document_model()
    document = load("documents/invoice-harbourside.json")
    invoice = model.model_validate(document["data"])
    assert invoice.invoice_number == document["data"]["invoiceNumber"]  # type: ignore[attr-defined]
    assert invoice.model_dump(by_alias=True, mode="json") == document["data"]
    assert models.document_model() is model
    assert models.document_model(INVOICE_TYPE["identifier"]) is model
    assert Broker.platform_calls == [INVOICE_TYPE["identifier"]]  # fetched once


@pytest.mark.usefixtures("broker_env")
def test_another_document_type_is_forbidden() -> None:
    with pytest.raises(sdk.Forbidden) as refused:
        models.document_model(RESUME_TYPE["identifier"])
    assert refused.value.status_code == 403
    assert Broker.platform_calls == []


@pytest.mark.usefixtures("broker_env")
def test_a_wrong_token_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other-token"
    other.write_text("someone-else")
    monkeypatch.setenv(contract.ENV_BROKER_TOKEN_PATH, str(other))
    with pytest.raises(sdk.Forbidden) as refused:
        models.document_model()
    assert refused.value.status_code == 401


@pytest.mark.usefixtures("broker_env")
@pytest.mark.parametrize("event", ["", "not json", "{}", '{"document_type": ""}', "[]"])
def test_no_document_type_in_the_event(event: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(contract.ENV_EVENT, event)
    with pytest.raises(sdk.SdkError, match="document_type"):
        models.document_model()


def test_the_sdk_package_does_not_import_pydantic() -> None:
    import subprocess
    import sys

    code = "import sys, docrelay.sdk; print('pydantic' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "operator")},
    )
    assert out.stdout.strip() == "False"
