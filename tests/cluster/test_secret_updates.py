"""Updating a secret against the real API server: the newest IntegrationSecret of a key wins
however close together the updates land (the same second, concurrently, two writers), and
superseded values are pruned after the grace period, never while an unfinished run received
them. The operator runs as a subprocess in tenant mode with only the permissions it needs.

Each ordering test chooses names so that the order before the admission sequence
(creationTimestamp, then name) would make the older secret Active.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from devkit.cluster import Cluster
from tests.cluster.harness import (
    GROUP,
    VERSION,
    Tenant,
    canary,
    canary_crawl,
    checked,
    condition,
    create_run,
    custom,
    docrelay,
    eventually,
    get_run,
    get_secret,
    grant,
    kubectl,
    make_integration,
    plaintext_secret,
    running_tenant,
    token_kubeconfig,
    wait_finished,
)
from tests.leakcheck import found

SEQUENCE = "sealing.docrelay.io/sequence"
CODE_OK = "def lambda_handler(event, context):\n    return {'summary': 'ok'}\n"
# Always a 429 from downstream: a TransientError, retried an hour later (the run waits, Queued).
CODE_429 = """
import urllib.error

def lambda_handler(event, context):
    raise urllib.error.HTTPError("https://api.example.com/bills", 429, "Too Many Requests",
                                 None, None)
"""
SLOW_RETRY = {"maxAttempts": 3, "backoffBaseSeconds": 3600, "backoffCapSeconds": 3600}


def secret_body(name: str, integration: str, key: str, value: str) -> dict[str, Any]:
    return yaml.safe_load(plaintext_secret(name, integration, key, value))


def sequence(api: client.ApiClient, ns: str, name: str) -> int:
    return int(get_secret(api, ns, name)["metadata"]["annotations"][SEQUENCE])


def settled(api: client.ApiClient, ns: str, key: str, count: int) -> list[dict[str, Any]]:
    """The `count` secrets of `key` once the operator has checked each one's current
    generation and their states agree: one Active, the others Superseded by it."""

    def fetch() -> list[dict[str, Any]]:
        items = custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, "integrationsecrets")
        return [i for i in items["items"] if i["spec"]["key"] == key]

    def agree(items: list[dict[str, Any]]) -> bool:
        if len(items) != count or not all(
            (i.get("status") or {}).get("observedGeneration") == i["metadata"]["generation"]
            for i in items
        ):
            return False
        active = [i["metadata"]["name"] for i in items if i["status"].get("state") == "Active"]
        return len(active) == 1 and all(
            i["status"].get("supersededBy") == active[0]
            for i in items
            if i["metadata"]["name"] != active[0]
        )

    return list(eventually(fetch, agree, f"the {count} secrets of {key} to settle"))


def active_name(items: list[dict[str, Any]]) -> str:
    return next(i["metadata"]["name"] for i in items if i["status"]["state"] == "Active")


def same_second_pair(
    api: client.ApiClient, ns: str, create_first: Any, create_second: Any
) -> tuple[str, str, str]:
    """Create two secrets for one new key, one after the other, until both land in the same
    second (whole seconds are all creationTimestamp has). Returns (key, first, second)."""
    for attempt in range(6):
        key = f"SAME_SECOND_{attempt}"
        first, second = f"z-first-{attempt}", f"a-second-{attempt}"  # the later name is older
        create_first(first, key)
        create_second(second, key)
        stamps = {get_secret(api, ns, n)["metadata"]["creationTimestamp"] for n in (first, second)}
        if len(stamps) == 1:
            return key, first, second
    raise AssertionError("six pairs of creates never landed in the same second")


# --- ordering --------------------------------------------------------------------------------


def test_an_update_in_the_same_second_wins(
    api: client.ApiClient, namespace: str, tenant: Tenant
) -> None:
    ns = namespace
    values: dict[str, str] = {}

    def create(name: str, key: str) -> None:
        values[name] = canary()
        custom(api).create_namespaced_custom_object(
            GROUP, VERSION, ns, "integrationsecrets", secret_body(name, "orders", key, values[name])
        )

    key, first, second = same_second_pair(api, ns, create, create)
    items = settled(api, ns, key, 2)
    # The update admitted second is Active, though its name sorts first.
    assert active_name(items) == second
    older = get_secret(api, ns, first)
    assert older["status"]["state"] == "Superseded"
    assert older["status"]["supersededBy"] == second
    assert condition(older, "Ready")["reason"] == "Superseded"
    assert sequence(api, ns, first) < sequence(api, ns, second)
    # `secret history` lists the key newest first: what is Active now, then what it replaced.
    out = docrelay("secret", "history", key, "-n", ns).stdout
    assert out.index(second) < out.index(first)
    assert not found(out, list(values.values()))


def test_concurrent_updates_the_last_admitted_wins_and_runs_get_it(
    api: client.ApiClient, namespace: str, tenant: Tenant, cluster: Any
) -> None:
    """Six writers at once, each replacing the value twice in a row. The last admission is
    always some writer's second update, so it is Active (the old order picked the largest
    name in the second: a first update, `z-...`); every create admitted after another one
    returned has the larger sequence; a run started afterwards gets the Active value."""
    ns = namespace
    make_integration(api, ns, "orders", CODE_OK, secrets=["API_KEY"], retry={"maxAttempts": 1})
    writers = 6
    barrier = threading.Barrier(writers)
    spans: dict[str, tuple[float, float]] = {}
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        own = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        api_ = client.CustomObjectsApi(own)
        barrier.wait()
        try:
            for name in (f"z-{i}-first", f"a-{i}-second"):
                started = time.monotonic()
                api_.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    ns,
                    "integrationsecrets",
                    secret_body(name, "orders", "API_KEY", canary()),
                )
                spans[name] = (started, time.monotonic())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    items = settled(api, ns, "API_KEY", 2 * writers)
    sequences = {i["metadata"]["name"]: int(i["metadata"]["annotations"][SEQUENCE]) for i in items}
    assert len(set(sequences.values())) == 2 * writers  # a total order, no ties
    active = active_name(items)
    assert sequences[active] == max(sequences.values())
    assert active.startswith("a-")  # a second update: the last admission is one
    for i in range(writers):
        assert sequences[f"z-{i}-first"] < sequences[f"a-{i}-second"]
    # Causal: a create that began after another one returned was admitted after it.
    for earlier, (_, returned) in spans.items():
        for later, (began, _) in spans.items():
            if returned < began:
                assert sequences[earlier] < sequences[later], (earlier, later)

    run = create_run(api, ns, "orders")
    status = wait_finished(api, ns, run)
    fingerprints = {i["metadata"]["name"]: i["status"]["fingerprint"] for i in items}
    assert len(set(fingerprints.values())) == 2 * writers  # twelve different values
    assert status["secretVersions"] == [
        {"key": "API_KEY", "secret": active, "fingerprint": fingerprints[active]}
    ]


def test_two_writers_the_later_wins_and_neither_sets_the_order(
    api: client.ApiClient, namespace: str, tenant: Tenant, tmp_path: Path
) -> None:
    """Two users (ServiceAccounts) who may write IntegrationSecrets: one applies plaintext,
    the other a manifest sealed on their machine. Whoever is admitted later wins; a sequence
    written by hand is replaced, and changing a stored one is refused."""
    ns = namespace
    writer_rules = [
        {
            "apiGroups": [GROUP],
            "resources": ["integrationsecrets"],
            "verbs": ["get", "list", "create", "patch", "update"],
        }
    ]
    kubeconfigs = {}
    for who in ("writer-a", "writer-b"):
        grant(api, ns, who, writer_rules)
        kubeconfigs[who] = str(
            token_kubeconfig(api, ns, who, tmp_path / f"{who}.kubeconfig", context_namespace=ns)
        )
    forged = "9" * 25  # writer A would like to stay Active forever
    values: dict[str, str] = {}
    as_a, as_b = (
        client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfigs[who]))
        for who in ("writer-a", "writer-b")
    )
    # B seals on their machine beforehand (one manifest per possible attempt), so both
    # creates are quick enough to share a second.
    sealed_by_b = {}
    for attempt in range(6):
        name, key = f"a-second-{attempt}", f"SAME_SECOND_{attempt}"
        values[name] = canary()
        sealed_by_b[name] = yaml.safe_load(
            docrelay(
                "seal", key, "--integration", "orders", "--name", name, "-n", ns, stdin=values[name]
            ).stdout
        )

    def by_a(name: str, key: str) -> None:  # plaintext, sealed by the webhook
        values[name] = canary()
        body = secret_body(name, "orders", key, values[name])
        body["metadata"]["annotations"] = {SEQUENCE: forged}
        as_a.create_namespaced_custom_object(GROUP, VERSION, ns, "integrationsecrets", body)

    def by_b(name: str, key: str) -> None:
        as_b.create_namespaced_custom_object(
            GROUP, VERSION, ns, "integrationsecrets", sealed_by_b[name]
        )

    key, first, second = same_second_pair(api, ns, by_a, by_b)
    items = settled(api, ns, key, 2)
    assert active_name(items) == second
    assert get_secret(api, ns, first)["status"]["supersededBy"] == second
    # A's hand-written sequence was replaced by the admission's own.
    assert sequence(api, ns, first) != int(forged)
    assert sequence(api, ns, first) < sequence(api, ns, second)

    # Neither may move a secret in the order: changing the sequence is refused, with why.
    stored = sequence(api, ns, second)
    refused = kubectl(
        "--kubeconfig",
        kubeconfigs["writer-a"],
        "annotate",
        "integrationsecret",
        second,
        f"{SEQUENCE}={forged}",
        "--overwrite",
        expect=None,
    )
    assert refused.returncode != 0
    assert "guard-sequence.secrets.docrelay.io" in refused.stderr, refused.stderr
    assert "cannot be set or changed" in refused.stderr
    # Removing it (as `kubectl replace` with an older manifest would) puts it back.
    kubectl(
        "--kubeconfig",
        kubeconfigs["writer-b"],
        "annotate",
        "integrationsecret",
        second,
        f"{SEQUENCE}-",
    )
    assert sequence(api, ns, second) == stored
    assert active_name(settled(api, ns, key, 2)) == second


# --- pruning ---------------------------------------------------------------------------------


@pytest.fixture
def pruning_tenant(api: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Tenant]:
    """The operator with a one-second grace period for superseded secrets."""
    env = {"DOCRELAY_SUPERSEDED_SECRET_GRACE_SECONDS": "1"}
    with running_tenant(api, namespace, tmp_path, env) as started:
        yield started


def pruned_events(api: client.ApiClient, ns: str) -> dict[str, str]:
    events = client.CoreV1Api(api).list_namespaced_event(
        ns, field_selector="involvedObject.kind=Integration,reason=SecretPruned"
    )
    return {e.message.split()[4]: e.message for e in events.items}


def test_superseded_secrets_are_pruned_once_no_unfinished_run_received_them(
    api: client.ApiClient, cluster: Cluster, namespace: str, pruning_tenant: Tenant
) -> None:
    ns = namespace
    values = {name: f'{canary()}/+=@%"\\é' for name in ("v1", "v2", "u1", "u2")}
    make_integration(api, ns, "orders", CODE_429, secrets=["API_KEY"], retry=SLOW_RETRY)
    kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        stdin=plaintext_secret("v1", "orders", "API_KEY", values["v1"]),
    )
    v1 = checked(api, ns, "v1")
    assert v1["status"]["state"] == "Active"

    # A run receives v1, fails with a transient error and waits an hour to retry.
    run = create_run(api, ns, "orders")
    waiting = eventually(
        lambda: get_run(api, ns, run),
        lambda o: (
            (o.get("status") or {}).get("phase") == "Queued"
            and o["status"].get("nextAttemptAt") is not None
        ),
        "the run to wait for its retry",
    )["status"]
    assert waiting["secretVersions"][0]["secret"] == "v1"

    # v2 replaces v1; u2 replaces u1, a key no run received. u1 is pruned after the grace
    # period; that round also found v1 superseded for longer, and kept it for the run.
    for name, key in (("v2", "API_KEY"), ("u1", "UNUSED"), ("u2", "UNUSED")):
        kubectl(
            "apply", "-n", ns, "-f", "-", stdin=plaintext_secret(name, "orders", key, values[name])
        )
        checked(api, ns, name)
    eventually(
        lambda: [
            i["metadata"]["name"]
            for i in custom(api).list_namespaced_custom_object(
                GROUP, VERSION, ns, "integrationsecrets"
            )["items"]
        ],
        lambda names: "u1" not in names,
        "u1 to be pruned",
    )
    kept = get_secret(api, ns, "v1")
    assert kept["status"]["state"] == "Superseded" and kept["status"]["supersededBy"] == "v2"
    assert get_run(api, ns, run)["status"]["phase"] == "Queued"

    # `secret history`: what is left, newest first, fingerprints and dates only.
    history = docrelay("secret", "history", "--integration", "orders", "-n", ns).stdout
    lines = history.splitlines()
    assert lines[0].split() == [
        "INTEGRATION", "KEY", "NAME", "STATE", "FINGERPRINT", "SEALED", "CREATED"
    ]  # fmt: skip
    rows = [line.split() for line in lines[1:-1]]
    fingerprint = {n: get_secret(api, ns, n)["status"]["fingerprint"] for n in ("v1", "v2", "u2")}
    assert [row[:5] for row in rows] == [
        ["orders", "API_KEY", "v2", "Active", fingerprint["v2"]],
        ["orders", "API_KEY", "v1", "Superseded", fingerprint["v1"]],
        ["orders", "UNUSED", "u2", "Active", fingerprint["u2"]],
    ]
    assert all(row[5].endswith("Z") and row[6].endswith("Z") for row in rows)
    assert lines[-1] == "(superseded secrets the operator pruned are not shown)"
    assert not found(history, list(values.values()))
    assert not any(value in history for value in values.values())

    # The run ends (cancelled): nothing holds v1 any more, it goes too.
    custom(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, "integrationruns", run, {"spec": {"cancel": True}}
    )
    assert wait_finished(api, ns, run)["phase"] == "Cancelled"
    eventually(
        lambda: [
            i["metadata"]["name"]
            for i in custom(api).list_namespaced_custom_object(
                GROUP, VERSION, ns, "integrationsecrets"
            )["items"]
        ],
        lambda names: sorted(names) == ["u2", "v2"],
        "v1 to be pruned once its run ended",
    )
    # Each pruning is an Event on the Integration: names and fingerprints, never a value.
    events = eventually(
        lambda: pruned_events(api, ns), lambda e: {"u1", "v1"} <= set(e), "two SecretPruned Events"
    )
    assert f"fingerprint {v1['status']['fingerprint']}" in events["v1"]
    assert "superseded by v2" in events["v1"]
    assert not found(" ".join(events.values()), list(values.values()))
    # The Active secrets stay, and the history no longer lists the pruned ones.
    assert get_secret(api, ns, "v2")["status"]["state"] == "Active"
    history = docrelay("secret", "history", "-n", ns).stdout
    assert "v1" not in history.split() and "u1" not in history.split()
    # Nothing of the pruned values (or the kept ones) reached any object, log or etcd.
    canary_crawl(cluster, list(values.values()), pruning_tenant.logs)
