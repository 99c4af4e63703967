"""Operator settings: environment and flags, and the errors a bad value gives at startup."""

from __future__ import annotations

import pytest

from docrelay.settings import (
    SettingsError,
    load_settings,
    resolve_keys_namespace,
    resolve_namespace,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DOCRELAY_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.health_url == "http://0.0.0.0:8080/healthz"
    assert settings.revision_history_limit == 20
    assert not settings.all_namespaces and settings.namespace is None


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCRELAY_HEALTH_PORT", "9000")
    monkeypatch.setenv("DOCRELAY_NAMESPACE", "from-env")
    assert load_settings().health_port == 9000
    assert load_settings(health_port=9100, namespace=None).health_port == 9100
    assert load_settings().namespace == "from-env"


@pytest.mark.parametrize(
    ("given", "env", "message"),
    [
        (
            {"health_port": 0},
            {},
            "health_port (--health-port or DOCRELAY_HEALTH_PORT): Input "
            "should be greater than or equal to 1",
        ),
        (
            {},
            {"DOCRELAY_HEALTH_PORT": "eighty"},
            "health_port (--health-port or DOCRELAY_HEALTH_PORT): Input should be a valid integer",
        ),
        (
            {"namespace": "Team_A"},
            {},
            "namespace (--namespace or DOCRELAY_NAMESPACE): String should match pattern",
        ),
        (
            {"namespace": "a", "all_namespaces": True},
            {},
            "choose either a namespace or all namespaces, not both",
        ),
        (
            {"revision_history_limit": 1},
            {},
            "revision_history_limit (--revision-history-limit "
            "or DOCRELAY_REVISION_HISTORY_LIMIT): Input should be greater than or equal to 2",
        ),
        ({"log_level": "LOUD"}, {}, "log_level (--log-level or DOCRELAY_LOG_LEVEL)"),
        ({}, {"DOCRELAY_COLOUR": "blue"}, None),  # unknown variables are ignored, not fatal
    ],
)
def test_bad_settings(
    monkeypatch: pytest.MonkeyPatch, given: dict, env: dict, message: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if message is None:
        load_settings(**given)
        return
    with pytest.raises(SettingsError) as raised:
        load_settings(**given)
    assert str(raised.value).startswith("invalid operator settings:\n  ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("given", "service_account", "kubeconfig", "expected"),
    [
        ({"namespace": "flag"}, "pod", "ctx", "flag"),
        ({}, "pod", "ctx", "pod"),
        ({}, None, "ctx", "ctx"),
        ({}, None, None, "default"),
        ({"all_namespaces": True}, "pod", "ctx", None),
    ],
)
def test_watched_namespace(
    given: dict, service_account: str | None, kubeconfig: str | None, expected: str | None
) -> None:
    assert resolve_namespace(load_settings(**given), service_account, kubeconfig) == expected


def test_bad_namespace_from_kubeconfig() -> None:
    with pytest.raises(SettingsError, match="namespace 'Not_A_Name' is not a name"):
        resolve_namespace(load_settings(), None, "Not_A_Name")


@pytest.mark.parametrize(
    ("given", "watched", "own", "expected"),
    [
        ({}, "finance", "finance", "finance-docrelay-keys"),  # tenant mode: never the tenant's
        ({}, None, "docrelay-system", "docrelay-system-docrelay-keys"),  # cluster mode
        ({"keys_namespace": "vault"}, "finance", "finance", "vault"),
    ],
)
def test_keys_namespace(given: dict, watched: str | None, own: str, expected: str) -> None:
    assert resolve_keys_namespace(load_settings(**given), watched, own) == expected


def test_keys_namespace_is_never_the_watched_one() -> None:
    with pytest.raises(SettingsError, match="must not be the watched namespace"):
        load_settings(namespace="finance", keys_namespace="finance")
    # Watched through the pod's or the kubeconfig's namespace: refused at start all the same.
    with pytest.raises(SettingsError, match="keys namespace finance is the watched namespace"):
        resolve_keys_namespace(load_settings(keys_namespace="finance"), "finance", "finance")
    with pytest.raises(SettingsError, match="longer than 63 characters"):
        resolve_keys_namespace(load_settings(), "n" * 50, "n" * 50)
