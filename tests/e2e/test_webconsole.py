"""The chart's console (`console.enabled=true`) from the real image on a real node: the
Deployment comes up Ready, a user signs in through the console Service with a ServiceAccount
token (the console forwards it; it has no rights of its own), a write without the session's
CSRF token is refused, and a forged session cookie gets nothing.

It runs after test_two_tenants.py (file order), whose first release owns the CRDs; run alone
(`-k console`) it installs them itself. Its own release and namespace leave the two tenants
alone."""

from __future__ import annotations

import html
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.kind_suite import images
from tests.e2e.test_two_tenants import CHART, CONTEXT, eventually, helm, kubectl

RELEASE, NAMESPACE = "console", "e2e-console"
SERVICE = f"{RELEASE}-docrelay-console"
CODE = "def lambda_handler(event, context):\n    return 'ok'\n"

pytestmark = pytest.mark.skipif(
    not CONTEXT, reason="run through `make e2e-node` or `make e2e-kind` (they create the cluster)"
)


class Forward:
    """`kubectl port-forward` to the console Service, on a free local port."""

    def __init__(self, namespace: str, service: str, port: int) -> None:
        self.process = subprocess.Popen(
            ["kubectl", "--context", CONTEXT, "-n", namespace, "port-forward",
             f"svc/{service}", f":{port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        self.url = f"http://127.0.0.1:{match.group(1)}"

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Cookies the console set (by hand: they are Secure, which a client's jar keeps off a
    plain-HTTP port-forward)."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        name, _, value = header.split(";", 1)[0].partition("=")
        found[name.strip()] = value.strip()
    return found


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


@pytest.fixture(scope="module")
def console() -> Iterator[dict[str, Any]]:
    repository, tag = images()[0].rsplit(":", 1)
    crds_present = kubectl("get", "crd", "integrations.docrelay.io", check=False).returncode == 0
    helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", f"crds.install={'false' if crds_present else 'true'}",
        "--set", "console.enabled=true",
        "--wait", "--timeout", "5m",
    )  # fmt: skip
    # A person's ServiceAccount, bound to the chart's docrelay-editor Role.
    kubectl("-n", NAMESPACE, "create", "serviceaccount", "alice")
    kubectl("-n", NAMESPACE, "create", "rolebinding", "alice", "--role=docrelay-editor",
            f"--serviceaccount={NAMESPACE}:alice")  # fmt: skip
    token = kubectl("-n", NAMESPACE, "create", "token", "alice").stdout.strip()
    integration = {
        "apiVersion": "docrelay.io/v1alpha1", "kind": "Integration",
        "metadata": {"name": "orders-export"},
        "spec": {"workspace": "mEFayXdO", "documentType": "tVpGRBWd",
                 "trigger": "DocumentParseCompleted", "code": CODE},
    }  # fmt: skip
    kubectl("-n", NAMESPACE, "apply", "-f", "-", stdin=json.dumps(integration))
    forward = Forward(NAMESPACE, SERVICE, 8080)
    try:
        yield {"url": forward.url, "token": token}
    finally:
        forward.close()


def test_the_console_deployment_signs_a_user_in_and_refuses_a_write_without_csrf(
    console: dict[str, Any],
) -> None:
    deployment = json.loads(
        kubectl("-n", NAMESPACE, "get", "deployment", SERVICE, "-o", "json").stdout
    )
    assert deployment["status"].get("readyReplicas") == 1
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["automountServiceAccountToken"] is False  # no rights of its own
    base = console["url"]

    # The sign-in page, then the form with its sign-in token and cookie (login CSRF).
    page = httpx.get(f"{base}/login", timeout=30)
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    sign_in = set_cookies(page)
    login = re.search(r'name="login" value="([^"]+)"', page.text)
    assert login, page.text
    refused = httpx.post(f"{base}/login", data={"login": html.unescape(login[1]),
                                               "token": "not-a-token"},
                         headers=cookie_header(sign_in), timeout=30)  # fmt: skip
    assert refused.status_code == 401  # the API server does not accept it
    signed = httpx.post(f"{base}/login", data={"login": html.unescape(login[1]),
                                              "token": console["token"]},
                        headers=cookie_header(sign_in), timeout=30)  # fmt: skip
    assert signed.status_code == 303, signed.text
    session = set_cookies(signed)
    assert "docrelay_session" in session
    cookie = next(h for h in signed.headers.get_list("set-cookie") if "docrelay_session" in h)
    assert "HttpOnly" in cookie and "secure" in cookie.lower()  # console.secureCookies
    assert console["token"] not in cookie  # sealed

    # Signed in: the page lists the namespace's Integration, read with alice's token.
    home = eventually(
        lambda: httpx.get(f"{base}/", headers=cookie_header(session), timeout=30),
        lambda r: r.status_code == 200 and "orders-export" in r.text,
        "the integrations page as alice",
    )
    assert f"system:serviceaccount:{NAMESPACE}:alice" in home.text

    # A write without the session's CSRF token (another site's form) is refused.
    for data in ({}, {"csrf": "guessed"}):
        write = httpx.post(f"{base}/integrations/orders-export/deploy",
                           data={"revision": "orders-export-1", **data},
                           headers=cookie_header(session), timeout=30)  # fmt: skip
        assert write.status_code == 403
        assert "CSRF token is missing or wrong" in write.text
    # A forged session cookie gets nothing.
    forged = httpx.get(f"{base}/", headers={"cookie": "docrelay_session=forged"}, timeout=30)
    assert forged.status_code == 401 and "orders-export" not in forged.text
