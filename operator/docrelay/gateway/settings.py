"""The gateway's settings: environment (prefix DOCRELAY_GATEWAY_) and command-line flags."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Self

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DEFAULT_SIGNING_SECRET = "docrelay-gateway-signing"
DEFAULT_PORT = 8090  # plain HTTP (TLS ends at the ingress); 8080 is the operator's probe port
MAX_BODY_BYTES = 256 * 1024

NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]


class GatewaySettingsError(ValueError):
    """Settings the gateway cannot start with; one line per bad setting."""


class GatewaySettings(BaseSettings):
    """Every setting of `docrelay gateway`; each flag has a DOCRELAY_GATEWAY_ variable twin."""

    model_config = SettingsConfigDict(env_prefix="DOCRELAY_GATEWAY_", extra="forbid", frozen=True)

    namespace: NamespaceName | None = Field(
        None, description="Tenant mode: the one namespace whose events this gateway takes."
    )
    all_namespaces: bool = Field(False, description="Cluster mode: events for any namespace.")
    kubeconfig: str | None = None
    context: str | None = None
    host: str = Field("127.0.0.1", min_length=1, description="Listen address.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="Listen port.")
    signing_secret: Annotated[str, Field(pattern=DNS_LABEL, max_length=253)] = Field(
        DEFAULT_SIGNING_SECRET,
        description=(
            "The Secret (in the event's namespace) holding the signing keys: entries named "
            "resthook* are RESThook keys, entries named standard* Standard Webhooks secrets "
            "(whsec_...). Several of each: any one verifies (rotation)."
        ),
    )
    keys_cache_seconds: float = Field(
        10.0, ge=0, le=3600, description="How long keys read from the Secret are reused."
    )
    max_body_bytes: int = Field(MAX_BODY_BYTES, ge=1024, le=16 * 1024 * 1024)
    tolerance_seconds: int = Field(300, ge=10, le=3600, description="Timestamp tolerance.")
    api_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Longest wait for the API server before answering 503."
    )
    retry_after_seconds: int = Field(10, ge=1, le=3600, description="Retry-After on a 503.")
    operator_namespace: NamespaceName | None = Field(
        None,
        description="Where the operator publishes the sealing certificate (ConfigMap); "
        "default: the gateway's namespace.",
    )
    platform_url: str | None = Field(
        None, description="The document platform's API base URL (subscription activation)."
    )
    platform_token: SecretStr | None = Field(None, description="The platform API token.")
    platform_organization: str | None = Field(
        None, description="The platform organization identifier (`docrelay subscribe`)."
    )
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # The run broker (docs/broker.md).
    sealing_keys_secret: Annotated[str, Field(pattern=DNS_LABEL, max_length=253)] = Field(
        "docrelay-sealing-keys",
        description="The operator's key Secret (in keys_namespace) the one-run keys are "
        "derived from.",
    )
    keys_namespace: NamespaceName | None = Field(
        None,
        description="The namespace of the key Secret, as the operator's keys_namespace; "
        "default: <operator_namespace, else the gateway's namespace>-docrelay-keys.",
    )
    platform_secret: Annotated[str, Field(pattern=DNS_LABEL, max_length=253)] = Field(
        "docrelay-platform",
        description="The Secret (in the run's namespace) with the tenant's platform "
        "credentials: `token`, and optionally `url` (default: platform_url).",
    )
    broker_rate_per_second: float = Field(
        10.0, gt=0, le=10000, description="Broker calls per second allowed per run (refill)."
    )
    broker_burst: int = Field(50, ge=1, le=100000, description="Broker calls per run in a burst.")
    broker_max_body_bytes: int = Field(
        16 * 1024, ge=0, le=1024 * 1024, description="Largest request body the broker reads."
    )
    # Connected accounts through Pipedream Connect (docs/pipedream.md).
    pipedream_secret: Annotated[str, Field(pattern=DNS_LABEL, max_length=253)] = Field(
        "docrelay-pipedream",
        description="The Secret (in the run's namespace) with the Pipedream project's "
        "credentials: client_id, client_secret, project_id, and optionally environment, url.",
    )
    pipedream_url: str = Field(
        "https://api.pipedream.com",
        pattern=r"^https?://[^\s]+$",
        description="Pipedream's API base URL when the Secret has no url.",
    )
    broker_max_request_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest api_request body (JSON, files base64-encoded) the broker reads.",
    )
    broker_action_timeout_seconds: float = Field(
        120.0, gt=0, le=900, description="Longest wait for a Pipedream action to finish."
    )
    broker_connect_workers: int = Field(
        64, ge=1, le=1024, description="Pipedream calls in flight at once per gateway process."
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="The gateway's URL as the outside world reaches it (the ingress): the base "
        "of the file URLs upload_file returns. Without it upload_file answers 503.",
    )
    file_url_seconds: int = Field(
        3600, ge=60, le=7 * 86400, description="How long a file URL from upload_file is valid."
    )
    broker_max_file_bytes: int = Field(
        700 * 1024, ge=1024, le=900 * 1024, description="Largest file upload_file stores."
    )

    # The egress proxy (docs/egress.md).
    proxy_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve the egress proxy on this port (at `host`); unset: no proxy.",
    )
    egress_resolve: dict[str, str] = Field(
        default_factory=dict,
        description="Names the proxy resolves to a fixed address instead of asking DNS "
        "(name=address, like curl --resolve): split-horizon and air-gapped setups. The address "
        "is checked like a resolved one (private ones need the Integration's cidrs).",
    )
    egress_auth_cache_seconds: float = Field(
        10.0, ge=0, le=300, description="How long the proxy reuses a token's identity check."
    )
    egress_connect_timeout_seconds: float = Field(
        10.0, gt=0, le=120, description="Longest wait to resolve and connect a destination."
    )
    egress_idle_timeout_seconds: float = Field(
        300.0, gt=0, le=3600, description="A proxied connection idle this long is closed."
    )
    egress_max_connections_per_run: int = Field(
        128, ge=1, le=10000, description="Proxied connections open at once per run."
    )
    egress_record_entries: int = Field(
        200, ge=1, le=1000, description="Connections kept per run attempt in its record."
    )

    @field_validator("egress_resolve")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        checked = {}
        for name, address in value.items():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{name}={address}: not an IP address") from None
            checked[name.strip().lower().rstrip(".")] = address
        return checked

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if self.all_namespaces and self.namespace:
            raise ValueError("choose either a namespace or all namespaces, not both")
        return self


def load_gateway_settings(**overrides: Any) -> GatewaySettings:
    """Environment first, command-line values (not None) on top."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return GatewaySettings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = ".".join(str(p) for p in error["loc"]) or "settings"
            lines.append(
                f"{name} (--{name.replace('_', '-')}, DOCRELAY_GATEWAY_{name.upper()}): "
                f"{error['msg']}"
            )
        raise GatewaySettingsError("\n".join(lines)) from None
