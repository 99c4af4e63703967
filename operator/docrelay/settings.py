"""The operator's settings: environment (prefix DOCRELAY_) and command-line flags, validated once.

Built at startup by `docrelay operator`, shared with the handlers through kopf's `memo`.
Nothing here talks to the cluster; resolving the watched namespace takes the candidates
(flag, service-account namespace, kubeconfig namespace) as arguments.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from docrelay.builders.sealing import default_keys_namespace

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_HEALTH_PORT = 8080
DEFAULT_REVISION_HISTORY_LIMIT = 20
DEFAULT_KEY_RENEWAL_DAYS = 30
DEFAULT_WEBHOOK_PORT = 9443


class SettingsError(ValueError):
    """Settings the operator cannot start with; the message names each bad setting."""


NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL.pattern)]


class OperatorSettings(BaseSettings):
    """Every setting of `docrelay operator`; each flag has a DOCRELAY_ variable twin."""

    model_config = SettingsConfigDict(env_prefix="DOCRELAY_", extra="forbid", frozen=True)

    namespace: NamespaceName | None = Field(
        None, description="Tenant mode: the one namespace to watch (default: see resolve)."
    )
    all_namespaces: bool = Field(False, description="Cluster mode: watch every namespace.")
    kubeconfig: str | None = Field(None, description="Kubeconfig file; default: the usual.")
    context: str | None = Field(None, description="Kubeconfig context; default: current.")
    health_host: str = Field("0.0.0.0", min_length=1, description="Probe endpoint address.")
    health_port: int = Field(DEFAULT_HEALTH_PORT, ge=1, le=65535, description="Probe port.")
    revision_history_limit: int = Field(
        DEFAULT_REVISION_HISTORY_LIMIT,
        ge=2,
        le=100,
        description="Revisions kept per integration; the oldest non-deployed are deleted.",
    )
    log_level: str = Field(
        "INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Operator log level."
    )
    # Sealed secrets (docs/secrets.md).
    key_renewal_days: int = Field(
        DEFAULT_KEY_RENEWAL_DAYS,
        ge=1,
        le=3650,
        description="A new sealing key after this many days.",
    )
    keys_namespace: NamespaceName | None = Field(
        None,
        description="The namespace of the key Secret (docrelay-sealing-keys): one no tenant "
        "user may read Secrets in. Default: <the operator's namespace>-docrelay-keys. It must "
        "exist; the operator never creates namespaces.",
    )
    key_check_seconds: float = Field(
        60.0,
        ge=0.5,
        le=3600,
        description="How often the key ring is checked (renewal due or requested, webhooks).",
    )
    webhook_host: str | None = Field(
        None,
        min_length=1,
        description="Admission webhook address; default 0.0.0.0 in a pod, else 127.0.0.1.",
    )
    webhook_port: int = Field(DEFAULT_WEBHOOK_PORT, ge=1, le=65535, description="Webhook port.")
    webhook_service: str | None = Field(
        None,
        pattern=DNS_LABEL.pattern,
        description="The Service in the operator's namespace the API server calls webhooks "
        "through; default: the webhook address itself (out of cluster).",
    )
    register_webhooks: bool = Field(
        True, description="Register the sealing webhook configurations at startup."
    )
    webhook_cert_dir: str | None = Field(
        None,
        min_length=1,
        description="A directory with the webhooks' serving certificate (tls.crt, tls.key and "
        "optionally ca.crt, the layout of a cert-manager Secret), reloaded when the files "
        "change; default: a self-signed certificate made at each start.",
    )
    superseded_secret_grace_seconds: float = Field(
        86400.0,  # a day to go back (delete the newer one) before the older one goes
        ge=0,
        le=10 * 365 * 86400,
        description="A superseded IntegrationSecret is deleted this long after a newer one "
        "replaced it, once no unfinished run received it (0: never deleted).",
    )
    # High availability (docs/operator.md): replicas elect one active process over a Lease.
    leader_election: bool = Field(
        False,
        description="Act only while holding the Lease docrelay-operator (replicas: one "
        "active, the others standing by); off: act at once, as the only replica.",
    )
    leader_election_namespace: NamespaceName | None = Field(
        None,
        description="The Lease's namespace; default: the watched namespace, else the pod's.",
    )
    pod_ip: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="This pod's address (the downward API's status.podIP): where standbys "
        "relay the webhook port to while this process is active; default: the webhook address, "
        "or this host's address when that is 0.0.0.0.",
    )
    # Runs (docs/runs.md).
    pause_after_failures: int = Field(
        5,
        ge=0,
        le=1000,
        description="Pause an integration after this many consecutive failed runs (0: never).",
    )
    broker_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="The run broker's base URL as run pods reach it (DOCRELAY_BROKER_URL in "
        "each run); without it runs cannot open their secrets.",
    )
    egress_proxy_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s@]+$",
        description="The egress proxy's URL as run pods reach it (the gateway's --proxy-port): "
        "HTTPS_PROXY/HTTP_PROXY in each run, NO_PROXY the broker's host (docs/egress.md). "
        "Without it runs get no proxy variables.",
    )
    notify_allow_private_targets: bool = Field(
        False,
        description="Let spec.notify URLs reach loopback, private, link-local and other "
        "non-public addresses (refused by default: the operator's network is not the tenant's).",
    )
    run_images: dict[
        Annotated[str, Field(pattern=r"^(python3\.(11|12|13)|nodejs(20|22|24|26))$")],
        Annotated[
            str, Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
        ],
    ] = Field(
        default_factory=dict,
        description="The run image per runtime (python3.12, nodejs20, ...), as JSON in "
        "DOCRELAY_RUN_IMAGES; unnamed runtimes use ghcr.io/docrelay/runner:<python> and "
        "ghcr.io/docrelay/runner-node:<nodejs> (docs/runs.md).",
    )
    metrics_host: str = Field("0.0.0.0", min_length=1, description="Metrics endpoint address.")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus metrics port (/metrics); 0: not served."
    )
    # Connected accounts (docs/pipedream.md): health checks against Pipedream Connect.
    account_check_seconds: float = Field(
        300.0, ge=1, le=86400, description="How often every ConnectedAccount is checked."
    )
    pipedream_secret: str = Field(
        "docrelay-pipedream",
        pattern=DNS_LABEL.pattern,
        description="The Secret (client_id, client_secret, project_id, environment, url) in "
        "each tenant namespace with the Pipedream project's credentials.",
    )
    # The agent (docs/agent.md). Unset agent_kind, base URL or model: the agent is off, and
    # Integrations with instructions show AgentAvailable=False (NotConfigured).
    agent_kind: Literal["openai", "anthropic"] | None = Field(
        None, description="The model API: openai (any OpenAI-compatible server) or anthropic."
    )
    agent_base_url: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", description="The model API's base URL."
    )
    agent_model: str | None = Field(None, min_length=1, max_length=128, description="The model.")
    agent_api_key_secret: str | None = Field(
        None,
        pattern=DNS_LABEL.pattern,
        description="A Secret in the operator's namespace holding the API key (none: no key).",
    )
    agent_api_key_secret_key: str = Field(
        "api-key", min_length=1, max_length=253, description="The key of that Secret."
    )
    agent_connect_timeout_seconds: float = Field(5.0, gt=0, le=120)
    agent_read_timeout_seconds: float = Field(120.0, gt=0, le=1800)
    agent_max_tokens: int = Field(4096, ge=256, le=200_000, description="Reply token limit.")
    agent_max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    agent_http_attempts: int = Field(4, ge=1, le=10, description="HTTP requests per answer.")
    agent_backoff_base_seconds: float = Field(1.0, ge=0, le=60)
    agent_backoff_cap_seconds: float = Field(30.0, ge=0, le=600)
    agent_code_attempts: int = Field(
        3, ge=1, le=10, description="Questions per generation or fix before giving up."
    )
    agent_fix_attempts: int = Field(3, ge=1, le=10, description="Fix requests served per run.")
    agent_prompt_tokens: int = Field(
        32_000,
        ge=2_000,
        le=1_000_000,
        description="A conversation turn's prompt budget, in tokens (estimated on the high side; "
        "the thread's oldest turns are summarised to fit).",
    )
    agent_turn_tokens: int = Field(
        150_000,
        ge=2_000,
        le=10_000_000,
        description="Tokens one answer in a conversation may cost over its attempts, as the "
        "provider reports them; the model is not asked again past it.",
    )
    agent_retry_seconds: float = Field(
        60.0, ge=0.5, le=3600, description="Wait before asking an unavailable provider again."
    )
    agent_test_documents: int = Field(
        3, ge=1, le=10, description="Documents a generated revision is test-run on."
    )
    agent_allow_document_values: bool = Field(
        False, description="Put document values (samples, the failed document) into prompts."
    )
    agent_poll_seconds: float = Field(2.0, ge=0.2, le=600, description="How often it looks.")
    platform_secret: str = Field(
        "docrelay-platform",
        pattern=DNS_LABEL.pattern,
        description="The Secret (token, url) in each tenant namespace for the platform API "
        "(document type schemas, sample documents).",
    )
    platform_url: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", description="Platform URL when the Secret has none."
    )

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if self.all_namespaces and self.namespace:
            raise ValueError("choose either a namespace or all namespaces, not both")
        if self.namespace and self.keys_namespace == self.namespace:
            raise ValueError(
                "the keys namespace must not be the watched namespace: whoever may read "
                "Secrets there would open every sealed value (docs/secrets.md)"
            )
        return self

    @property
    def health_url(self) -> str:
        return f"http://{self.health_host}:{self.health_port}/healthz"


def load_settings(**overrides: Any) -> OperatorSettings:
    """Settings from the environment, with command-line values (not None) taking precedence.

    Raises SettingsError with one line per problem, naming the flag and its variable.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return OperatorSettings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            hint = (
                f" (--{field.replace('_', '-')} or DOCRELAY_{field.upper()})"
                if error["loc"]
                else ""
            )
            lines.append(f"{field}{hint}: {error['msg']}")
        raise SettingsError("invalid operator settings:\n  " + "\n  ".join(lines)) from None


def resolve_namespace(
    settings: OperatorSettings,
    service_account_namespace: str | None,
    kubeconfig_namespace: str | None,
) -> str | None:
    """The namespace to watch in tenant mode, or None in cluster mode.

    Order: the namespace setting, the in-cluster service-account namespace, the kubeconfig
    context's namespace, then "default" (as kubectl does).
    """
    if settings.all_namespaces:
        return None
    namespace = (
        settings.namespace or service_account_namespace or kubeconfig_namespace or "default"
    ).strip()
    if not DNS_LABEL.match(namespace):
        raise SettingsError(f"invalid operator settings: namespace {namespace!r} is not a name")
    return namespace


def resolve_keys_namespace(settings: OperatorSettings, watched: str | None, own: str) -> str:
    """Where the key Secret lives: the setting, else `<own namespace>-docrelay-keys`; never
    the watched namespace, where tenant users keep Integrations (and may read Secrets)."""
    try:
        where = settings.keys_namespace or default_keys_namespace(own)
    except ValueError as exc:
        raise SettingsError(f"invalid operator settings: {exc} (--keys-namespace)") from None
    if where == watched:
        raise SettingsError(
            f"invalid operator settings: the keys namespace {where} is the watched namespace; "
            "whoever may read Secrets there would open every sealed value (--keys-namespace)"
        )
    return where
