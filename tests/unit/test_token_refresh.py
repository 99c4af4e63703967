"""The client's token refresh hook, throttled (docrelay.kube.load_configuration): the official
client calls it before every request, and the kubeconfig's hook re-applies the whole
configuration each time (and installs itself again); ours runs it at most once a second and
stays installed, and the token it reads is the one requests carry."""

from __future__ import annotations

from pathlib import Path

import pytest

import docrelay.kube as kube

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- cluster: {server: "https://127.0.0.1:6443"}
  name: c
contexts:
- context: {cluster: c, user: u}
  name: x
current-context: x
users:
- name: u
  user: {token: TOKEN}
"""


def configuration(tmp_path: Path, token: str = "first") -> object:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.replace("TOKEN", token))
    return kube.load_configuration(str(path))


class Conf:
    refresh_api_key_hook: object = None


def test_the_hook_runs_at_most_once_a_second_per_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    refresh = kube._throttled(calls.append)
    a, b = Conf(), Conf()
    a.refresh_api_key_hook = b.refresh_api_key_hook = refresh
    for _ in range(100):
        refresh(a)
    refresh(b)
    assert calls == [a, b]
    monkeypatch.setattr(kube, "TOKEN_REFRESH_SECONDS", 0.0)  # a second later
    refresh(a)
    assert calls == [a, b, a]


def test_the_throttle_stays_installed_after_the_clients_hook_reinstalls_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubernetes.config's hook sets `refresh_api_key_hook` to itself each time it runs."""
    config = configuration(tmp_path)
    throttled = config.refresh_api_key_hook  # type: ignore[attr-defined]
    monkeypatch.setattr(kube, "TOKEN_REFRESH_SECONDS", 0.0)
    for _ in range(3):
        config.auth_settings()  # type: ignore[attr-defined]
        assert config.refresh_api_key_hook is throttled  # type: ignore[attr-defined]
    assert config.auth_settings()["BearerToken"]["value"] == "Bearer first"  # type: ignore[attr-defined]
