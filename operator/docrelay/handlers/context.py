"""What handlers share through kopf's memo: the settings and the API client, built at startup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from docrelay.kube import Kube
from docrelay.settings import OperatorSettings


@dataclass(frozen=True)
class OperatorContext:
    settings: OperatorSettings
    kube: Kube


MEMO_KEY = "docrelay"


def from_memo(memo: Any) -> OperatorContext:
    context = memo[MEMO_KEY]
    assert isinstance(context, OperatorContext)
    return context
