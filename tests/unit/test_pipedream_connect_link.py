"""The Pipedream stand-in's Connect Link page, as a browser uses it: the token's page, one
Connect, the account added for the token's user, the redirect to success_redirect_uri, and
the link used up."""

from __future__ import annotations

from fastapi.testclient import TestClient

from devkit.standins.pipedream import PipedreamStandin


def test_a_connect_link_connects_one_account_then_is_used_up() -> None:
    pd = PipedreamStandin()
    http = TestClient(pd.app, follow_redirects=False)
    token = http.post(
        "/v1/oauth/token",
        json={"grant_type": "client_credentials", "client_id": pd.client_id,
              "client_secret": pd.client_secret},
    ).json()["access_token"]  # fmt: skip
    headers = {"authorization": f"Bearer {token}", "x-pd-environment": "development"}
    answer = http.post(
        f"/v1/connect/{pd.project_id}/tokens",
        json={"external_user_id": "finance-team", "success_redirect_uri": "http://back/here"},
        headers=headers,
    ).json()
    page = http.get(answer["connect_link_url"] + "&app=xero_accounting_api")
    assert page.status_code == 200
    assert "Connect xero_accounting_api" in page.text and "finance-team" in page.text
    form = {"token": answer["token"], "app": "xero_accounting_api"}
    connected = http.post("/_static/connect", data=form)
    assert (connected.status_code, connected.headers["location"]) == (303, "http://back/here")
    (account,) = pd.connected
    listed = http.get(
        f"/v1/connect/{pd.project_id}/accounts",
        params={"external_user_id": "finance-team", "app": "xero_accounting_api"},
        headers=headers,
    ).json()["data"]
    assert [a["id"] for a in listed] == [account.id]
    assert account.environment == "development"
    again = http.post("/_static/connect", data=form)  # single use
    assert again.status_code == 400 and "This link has expired" in again.text
    assert http.get(answer["connect_link_url"] + "&app=slack").status_code == 400
    assert len(pd.connected) == 1
