"""The Pipedream Connect stand-in's own contract, spoken to with plain httpx."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.standins.pipedream import PipedreamStandin, echo_upstream
from devkit.standins.server import RunningServer, serving
from docrelay.pipedream import encode_target_url


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[PipedreamStandin, RunningServer, RunningServer]]:
    pd = PipedreamStandin(page_size=2)
    with serving(pd.app) as server, serving(echo_upstream()) as upstream:
        yield pd, server, upstream


@pytest.fixture
def pd(served: tuple[PipedreamStandin, RunningServer, RunningServer]) -> PipedreamStandin:
    served[0].reset()
    return served[0]


@pytest.fixture
def http(served: tuple[PipedreamStandin, RunningServer, RunningServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[1].base_url) as client:
        yield client


def token(http: httpx.Client, pd: PipedreamStandin, **override: str) -> httpx.Response:
    body = {"grant_type": "client_credentials", "client_id": pd.client_id,
            "client_secret": pd.client_secret, **override}
    return http.post("/v1/oauth/token", json=body)


def headers(bearer: str, environment: str | None = "development") -> dict[str, str]:
    out = {"authorization": f"Bearer {bearer}"}
    if environment:
        out["x-pd-environment"] = environment
    return out


def test_token_endpoint(http: httpx.Client, pd: PipedreamStandin) -> None:
    answer = token(http, pd)
    assert answer.status_code == 200
    assert answer.json()["token_type"] == "Bearer" and answer.json()["expires_in"] == 3600
    assert token(http, pd, client_secret="wrong").status_code == 401
    assert token(http, pd, grant_type="password").status_code == 400
    form = http.post("/v1/oauth/token", data={"grant_type": "client_credentials",
                                              "client_id": pd.client_id,
                                              "client_secret": pd.client_secret})
    assert form.status_code == 200


@pytest.mark.parametrize(
    ("case", "status"),
    [("no token", 401), ("unknown token", 401), ("expired", 401), ("no environment", 400),
     ("bad environment", 400), ("other project", 404)],
)
def test_connect_calls_are_checked(
    http: httpx.Client, pd: PipedreamStandin, case: str, status: int
) -> None:
    bearer = token(http, pd).json()["access_token"]
    path = f"/v1/connect/{pd.project_id}/accounts"
    sent: dict[str, Any] = {"headers": headers(bearer)}
    if case == "no token":
        sent["headers"] = {"x-pd-environment": "development"}
    elif case == "unknown token":
        sent["headers"] = headers("pd_at_forged")
    elif case == "expired":
        pd.expire_tokens()
    elif case == "no environment":
        sent["headers"] = headers(bearer, None)
    elif case == "bad environment":
        sent["headers"] = headers(bearer, "staging")
    elif case == "other project":
        path = "/v1/connect/proj_other/accounts"
    assert http.get(path, **sent).status_code == status
    assert pd.recorded("/accounts")[-1].status == status


def test_pagination_cursors(http: httpx.Client, pd: PipedreamStandin) -> None:
    ids = sorted(pd.add_account("u", "slack").id for _ in range(3))
    auth = headers(token(http, pd).json()["access_token"])
    url = f"/v1/connect/{pd.project_id}/accounts"
    first = http.get(url, headers=auth).json()
    assert [a["id"] for a in first["data"]] == ids[:2]
    assert first["page_info"]["count"] == 2 and first["page_info"]["total_count"] == 3
    second = http.get(url, headers=auth, params={"after": first["page_info"]["end_cursor"]})
    assert [a["id"] for a in second.json()["data"]] == ids[2:]
    assert http.get(url, headers=auth, params={"after": "bm9wZQ"}).status_code == 400


def test_proxy_refuses_targets_outside_loopback(
    http: httpx.Client, pd: PipedreamStandin
) -> None:
    account = pd.add_account("u", "slack")
    auth = headers(token(http, pd).json()["access_token"])
    query = {"external_user_id": "u", "account_id": account.id}
    base = f"/v1/connect/{pd.project_id}/proxy/"
    outside = http.get(base + encode_target_url("https://slack.com/api/x"), headers=auth,
                       params=query)
    assert outside.status_code == 400 and "loopback" in outside.json()["error"]
    assert http.get(base + "!!!!", headers=auth, params=query).status_code == 400
    assert http.get(base + encode_target_url("http://127.0.0.1:9/x"), headers=auth,
                    params={"account_id": account.id}).status_code == 400


def test_proxy_accepts_padded_base64_and_credential_macros(
    served: tuple[PipedreamStandin, RunningServer, RunningServer], http: httpx.Client,
    pd: PipedreamStandin,
) -> None:
    account = pd.add_account("u", "openai", credentials={"oauth_access_token": "at_1",
                                                         "api_key": "sk_standin_1"})
    auth = headers(token(http, pd).json()["access_token"])
    padded = base64.urlsafe_b64encode(f"{served[2].base_url}/echo".encode()).decode()
    answer = http.get(f"/v1/connect/{pd.project_id}/proxy/{padded}",
                      headers={**auth, "x-pd-proxy-authorization": "Bearer {{api_key}}",
                               "x-other": "dropped"},
                      params={"external_user_id": "u", "account_id": account.id})
    assert answer.status_code == 200
    seen = answer.json()["headers"]
    assert seen["authorization"] == "Bearer sk_standin_1"
    assert "x-other" not in seen


def test_entry_point_serves() -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devkit.standins.pipedream", "--port", str(port)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f'"base_url": "http://127.0.0.1:{port}"' in first
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/v1/oauth/token", json={})
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert answer.status_code == 400
    finally:
        process.terminate()
        process.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_action_catalog_lists_by_app_retrieves_and_configures_props(
    http: httpx.Client, pd: PipedreamStandin
) -> None:
    """Connect's list-actions-by-app, retrieve-component and configure-prop, as the SDK calls
    them: pages of components, one component under "data", remote options of a prop."""
    bearer = token(http, pd).json()["access_token"]
    auth = headers(bearer)
    base = f"/v1/connect/{pd.project_id}/actions"
    first = http.get(base, params={"app": "slack"}, headers=auth).json()
    keys = [c["key"] for c in first["data"]]
    assert keys == ["slack-list-channels", "slack-send-message"]  # page_size 2: one page
    assert first["page_info"]["total_count"] == 2 and first["page_info"]["end_cursor"] is None
    assert all(c["component_type"] == "action" for c in first["data"])
    xero = http.get(base, params={"app": "xero_accounting_api"}, headers=auth).json()
    assert [c["key"] for c in xero["data"]] == ["xero_accounting_api-create-invoice"]
    everything = http.get(base, params={"limit": 2}, headers=auth).json()
    assert everything["page_info"]["end_cursor"]  # 3 actions, 2 per page
    rest = http.get(base, params={"limit": 2, "after": everything["page_info"]["end_cursor"]},
                    headers=auth).json()
    assert len(everything["data"]) + len(rest["data"]) == 3

    component = http.get(f"{base}/slack-send-message", headers=auth).json()["data"]
    props = {p["name"]: p for p in component["configurable_props"]}
    assert props["slack"] == {**props["slack"], "type": "app", "app": "slack"}
    assert props["channel"]["remoteOptions"] is True
    assert http.get(f"{base}/slack-no-such-action", headers=auth).status_code == 404
    assert http.get(base, params={"app": "slack"}).status_code == 401  # no token

    account = pd.add_account("user-1", "slack")
    body = {"id": "slack-send-message", "external_user_id": "user-1", "prop_name": "channel",
            "configured_props": {"slack": {"authProvisionId": account.id}}}
    options = http.post(f"{base}/configure", json=body, headers=auth).json()
    assert options["errors"] == []
    assert {"label": "#finance", "value": "C0FINANCE1"} in options["options"]
    # Another external user's account loads nothing: the error says why, no options.
    other = http.post(f"{base}/configure", json={**body, "external_user_id": "user-2"},
                      headers=auth).json()
    assert other["options"] is None and other["errors"]
    bad = http.post(f"{base}/configure", json={**body, "prop_name": "nope"}, headers=auth)
    assert bad.status_code == 400
