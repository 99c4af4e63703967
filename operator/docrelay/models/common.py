"""Shared building blocks of the docrelay API: the base model, named constrained types, CEL.

Every constraint here has a twin in the CRDs: the generator (`crdgen`) turns these types into
OpenAPI (pattern, lengths, bounds) and the `x-kubernetes-validations` carried in
`json_schema_extra` into CEL rules. A rule that OpenAPI cannot express is written twice, once
as CEL and once as a Python validator with the same message; tests/cluster proves both reject
the same manifests.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from annotated_types import Ge
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "docrelay.io"
VERSION = "v1alpha1"
API_VERSION: Literal["docrelay.io/v1alpha1"] = "docrelay.io/v1alpha1"
CATEGORY = "docrelay"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def rules(*entries: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules."""
    return {"x-kubernetes-validations": list(entries)}


class ApiModel(BaseModel):
    """Base of every spec and status model: immutable values, camelCase on the wire."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        # The CRDs and the operator ship together; an unknown field is a typo to report.
        extra="forbid",
    )


ItemT = TypeVar("ItemT")


def _no_duplicates(items: tuple[ItemT, ...]) -> tuple[ItemT, ...]:
    seen: set[ItemT] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"duplicate value {item!r}")
        seen.add(item)
    return items


UniqueTuple = Annotated[
    tuple[ItemT, ...],
    AfterValidator(_no_duplicates),
    Field(json_schema_extra={"x-kubernetes-list-type": "set"}),
]
"""A list of distinct scalars (`x-kubernetes-list-type: set`: the API server rejects duplicates)."""


# --- Names ------------------------------------------------------------------------------------

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _name(max_length: int) -> Any:
    return StringConstraints(
        strict=True, min_length=1, max_length=max_length, pattern=DNS_SUBDOMAIN_PATTERN
    )


# Name budget: Job, label and ConfigMap names are derived from these, and a label value or a
# Job name holds at most 63 characters (docs/api.md, "Names").
INTEGRATION_NAME_MAX = 40
RUN_NAME_MAX = 56
REVISION_NAME_MAX = 63

ObjectName = Annotated[str, _name(253)]
"""The name of a namespaced object in the same namespace (ConfigMap, ConnectedAccount...)."""
IntegrationName = Annotated[str, _name(INTEGRATION_NAME_MAX)]
RunName = Annotated[str, _name(RUN_NAME_MAX)]
RevisionName = Annotated[str, _name(REVISION_NAME_MAX)]

# --- Identifiers of the document platform and of events ----------------------------------------

PlatformId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
    ),
]
"""A document platform identifier (workspace, document type, document): an id, never data."""

EventId = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
    ),
]
IdempotencyKey = EventId

Sha256Digest = Annotated[
    str,
    StringConstraints(strict=True, min_length=71, max_length=71, pattern=r"^sha256:[a-f0-9]{64}$"),
]

CamelCaseReason = Annotated[
    str,
    StringConstraints(
        strict=True,
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    ),
]
"""A machine-readable CamelCase reason, as in metav1.Condition."""

Actor = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)]
"""Who did something: a Kubernetes user name, `docrelay-operator`, or `agent`."""

# --- Environment variable names ----------------------------------------------------------------

ENV_VAR_PATTERN = r"^[A-Z_][A-Z0-9_]*$"
RESERVED_ENV_PREFIXES = ("DOCRELAY_", "KUBERNETES_", "LD_", "PYTHON")
RESERVED_ENV_NAMES = ("HOME", "PATH")
RESERVED_ENV_MESSAGE = (
    "is reserved: names starting with DOCRELAY_, KUBERNETES_, LD_ or PYTHON and the names "
    "HOME and PATH belong to the runtime"
)
_RESERVED_ENV_RE = re.compile("^(" + "|".join(RESERVED_ENV_PREFIXES) + ")")


def _not_reserved(name: str) -> str:
    if _RESERVED_ENV_RE.match(name) or name in RESERVED_ENV_NAMES:
        raise ValueError(f"{name} {RESERVED_ENV_MESSAGE}")
    return name


_RESERVED_ENV_RULE = cel(
    "!self.matches('^("
    + "|".join(RESERVED_ENV_PREFIXES)
    + ")') && !(self in ["
    + ", ".join(f"'{n}'" for n in RESERVED_ENV_NAMES)
    + "])",
    RESERVED_ENV_MESSAGE,
)

EnvVarName = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=ENV_VAR_PATTERN),
    AfterValidator(_not_reserved),
    Field(json_schema_extra=rules(_RESERVED_ENV_RULE)),
]
"""The name of an environment variable the integration's code reads (`os.environ["NAME"]`)."""

# --- Network -----------------------------------------------------------------------------------

Hostname = Annotated[
    str,
    StringConstraints(
        strict=True,
        min_length=1,
        max_length=253,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
        r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$",
    ),
]
"""A DNS name, optionally with a leading `*.` wildcard for its subdomains (one or more labels
below the name) and a `:port` (1-65535; without one: 443, or 80 for plain HTTP)."""

CIDR_MESSAGE = "must be a CIDR block with no host bits set, e.g. 203.0.113.0/24"


def _network_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"{value} {CIDR_MESSAGE}") from None
    return value


Cidr = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=43, pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$"
    ),
    AfterValidator(_network_cidr),
    Field(
        json_schema_extra=rules(
            cel("isCIDR(self) && cidr(self) == cidr(self).masked()", CIDR_MESSAGE)
        )
    ),
]

# --- Quantities (int-or-string, as in core resource requirements) -----------------------------

QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
_BINARY_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)

Quantity = Annotated[
    Annotated[int, Strict(), Ge(0)]
    | Annotated[
        str, StringConstraints(strict=True, min_length=1, max_length=64, pattern=QUANTITY_PATTERN)
    ],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
"""A Kubernetes quantity: `1`, `500m`, `256Mi`, `1.5Gi`."""


def parse_quantity(quantity: int | str) -> Decimal:
    """The numeric value of a quantity (what CEL's `quantity()` compares)."""
    if isinstance(quantity, int):
        return Decimal(quantity)
    match = _QUANTITY_RE.match(quantity)
    if not match:
        raise ValueError(f"not a quantity: {quantity!r}")
    number, suffix = Decimal(match.group(1)), match.group(3) or ""
    if suffix in _BINARY_SUFFIX:
        return number * _BINARY_SUFFIX[suffix]
    if suffix in _DECIMAL_SUFFIX:
        return number * _DECIMAL_SUFFIX[suffix]
    return number * Decimal(10) ** int(suffix[1:])


# --- Enums shared by several kinds -------------------------------------------------------------


class Trigger(StrEnum):
    """The document event that starts a run."""

    DOCUMENT_PARSE_COMPLETED = "DocumentParseCompleted"
    DOCUMENT_VALIDATED = "DocumentValidated"


class PythonVersion(StrEnum):
    """The Python version the code runs under. Quote it in YAML: 3.10 would read as 3.1."""

    V3_11 = "3.11"
    V3_12 = "3.12"
    V3_13 = "3.13"


ImageReference = Annotated[
    str,
    StringConstraints(
        strict=True, min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"
    ),
]


class NodeVersion(StrEnum):
    """The Node.js major version the code runs under (the LTS lines). Quote it in YAML.

    24 and 26 are the active LTS lines, 22 is in maintenance until April 2027, 20 is past its
    end of life (April 2026) and kept so that manifests naming it keep working."""

    V20 = "20"
    V22 = "22"
    V24 = "24"
    V26 = "26"


# Node.js lines past their end of life upstream (no more security fixes), and since when. They
# still run; the Integration says so (kubectl explain, a Warning Event, docs/runner.md).
NODE_END_OF_LIFE: dict[NodeVersion, str] = {NodeVersion.V20: "April 2026"}


class Language(StrEnum):
    """The language of an integration's code, from the runtime's version field."""

    PYTHON = "python"
    NODEJS = "nodejs"


DEFAULT_PYTHON = PythonVersion.V3_12
RUNTIME_ONE_LANGUAGE_MESSAGE = "runtime names one language: python or nodejs, not both"


class Runtime(ApiModel):
    """How the code runs: its language and version (Python unless `nodejs` is given), and
    optionally a different image or runtime class."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel("!(has(self.python) && has(self.nodejs))", RUNTIME_ONE_LANGUAGE_MESSAGE)
        )
    )

    python: PythonVersion | None = Field(
        default=None,
        description=(
            'Python code: the Python version of the run image ("3.11", "3.12" or "3.13"). '
            'Quote it. The default when nodejs is not given: "3.12".'
        ),
    )
    nodejs: NodeVersion | None = Field(
        default=None,
        description=(
            'JavaScript code: the Node.js version of the run image ("20", "22", "24" or '
            '"26"). Quote it. "24" and "26" are the LTS lines; "22" gets security fixes until '
            'April 2027; "20" is past its end of life (April 2026, no more security fixes): '
            'it still runs, move to "24" or "26". '
            "The code exports `handler(event, context)` (ES module or CommonJS) and reads "
            "its secrets as process.env.NAME."
        ),
    )
    image: ImageReference | None = Field(
        default=None,
        description=(
            "A run image to use instead of the operator's image for this language and version. "
            "It must contain the docrelay runner (`python -m docrelay.runner`, or for Node.js "
            "/opt/docrelay/node/runner.mjs) and the helper library."
        ),
    )
    runtime_class_name: ObjectName | None = Field(
        default=None,
        description=(
            "The RuntimeClass of the run pods, for a sandbox such as gVisor or Kata Containers. "
            "Empty: the cluster's default runtime."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _python_by_default(cls, data: Any) -> Any:
        """No language given: Python 3.12, as before Node.js existed (so revision names of
        existing Integrations stay the same)."""
        if isinstance(data, dict) and data.get("python") is None and data.get("nodejs") is None:
            return {**data, "python": DEFAULT_PYTHON}
        return data

    @model_validator(mode="after")
    def _one_language(self) -> Self:
        if self.python is not None and self.nodejs is not None:
            raise ValueError(RUNTIME_ONE_LANGUAGE_MESSAGE)
        return self

    @property
    def language(self) -> Language:
        return Language.NODEJS if self.nodejs is not None else Language.PYTHON

    @property
    def version(self) -> str:
        """The language's version: "3.12", "20"."""
        return str(self.nodejs if self.nodejs is not None else self.python or DEFAULT_PYTHON)

    @property
    def end_of_life(self) -> str | None:
        """When this runtime's line reached its end of life upstream (no more security fixes),
        or None while it is supported."""
        return NODE_END_OF_LIFE.get(self.nodejs) if self.nodejs is not None else None

    @property
    def key(self) -> str:
        """Language and version in one word, as the image map names them: python3.12, nodejs20."""
        return f"{self.language.value}{self.version}"


# --- Object metadata and the resource envelope -------------------------------------------------


class ObjectMeta(BaseModel):
    """The parts of metav1.ObjectMeta docrelay reads; everything else is kept as is."""

    model_config = ConfigDict(
        frozen=True, alias_generator=to_camel, populate_by_name=True, extra="allow"
    )

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    resource_version: str | None = None
    uid: str | None = None
    creation_timestamp: datetime | None = None


@dataclass(frozen=True)
class PrinterColumn:
    """One `additionalPrinterColumns` entry; `priority=1` shows only with `-o wide`."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0


def condition_path(condition_type: str, field_name: str = "status") -> str:
    """The JSONPath of one field of the condition with the given type (for printer columns)."""
    return f'.status.conditions[?(@.type=="{condition_type}")].{field_name}'


@dataclass(frozen=True)
class CrdInfo:
    """Everything about a kind's CRD that is not its schema."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    selectable_fields: tuple[str, ...] = ()
    max_name_length: int | None = None
    name_length_reason: str = ""
    categories: tuple[str, ...] = field(default=(CATEGORY,))

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def name_length_message(self) -> str:
        return (
            f"metadata.name must be at most {self.max_name_length} characters: "
            f"{self.name_length_reason}"
        )


class SpecModel(ApiModel):
    """A spec whose update rules (immutability) are declared once for CEL and for Python."""

    immutable_fields: ClassVar[tuple[str, ...]] = ()
    """Python names of fields that never change after creation."""
    immutable_spec: ClassVar[bool] = False
    """True: nothing in the spec ever changes (`self == oldSelf` on the whole spec)."""
    immutable_spec_message: ClassVar[str] = "spec is immutable"

    @classmethod
    def transition_rules(cls) -> list[dict[str, str]]:
        """The CEL transition rules the CRD puts on `spec`."""
        if cls.immutable_spec:
            return [cel("self == oldSelf", cls.immutable_spec_message)]
        out = []
        for name in cls.immutable_fields:
            alias = cls.model_fields[name].alias or name
            out.append(
                cel(
                    f"has(self.{alias}) == has(oldSelf.{alias}) && "
                    f"(!has(self.{alias}) || self.{alias} == oldSelf.{alias})",
                    f"{alias} is immutable",
                    field_path=f".{alias}",
                )
            )
        return out

    def update_errors(self, old: Self) -> list[str]:
        """What the API server would say about changing `old` into `self` (empty: allowed)."""
        if self.immutable_spec:
            return [self.immutable_spec_message] if self != old else []
        return [
            f"{type(self).model_fields[name].alias or name} is immutable"
            for name in self.immutable_fields
            if getattr(self, name) != getattr(old, name)
        ]


class CustomResource(ApiModel):
    """The envelope of every docrelay object: apiVersion, kind, metadata, spec, status."""

    crd: ClassVar[CrdInfo]

    api_version: Literal["docrelay.io/v1alpha1"] = API_VERSION
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @model_validator(mode="after")
    def _name_fits_budget(self) -> Self:
        limit = self.crd.max_name_length
        if limit is not None and self.metadata.name and len(self.metadata.name) > limit:
            raise ValueError(self.crd.name_length_message)
        return self

    @classmethod
    def root_rules(cls) -> list[dict[str, str]]:
        """CEL rules on the whole object (only metadata.name is reachable there)."""
        if cls.crd.max_name_length is None:
            return []
        return [
            cel(
                f"self.metadata.name.size() <= {cls.crd.max_name_length}",
                cls.crd.name_length_message,
            )
        ]
