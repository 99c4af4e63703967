"""Pipedream's action catalog for the agent. Pure: Connect's JSON in, prompt models out; and
the action calls a module makes, checked against the catalog and named for the thread.

The lookup itself (list by app, retrieve, configure a prop) is `docrelay.pipedream.catalog`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from docrelay.agent.codecheck import Problem, Rule
from docrelay.agent.prompts import AccountRef, CatalogAction, CatalogProp

MAX_ACTIONS = 25  # listed per app in a prompt
MAX_DETAILED = 3  # looked up in full (props and their values) per app
MAX_OPTIONS = 20  # values shown per prop
_WORD = re.compile(r"[a-z0-9]+")
# Words that say nothing about which action is meant.
_STOP = frozenset(
    {"and", "the", "for", "with", "from", "its", "each", "every", "new", "when", "then"}
    | {"this", "that", "into", "document", "documents"}
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


def relevance(component: Mapping[str, Any], instructions: str) -> int:
    """How many of the instructions' words the action's key, name and description share."""
    about = " ".join(str(component.get(k) or "") for k in ("key", "name", "description")).replace(
        "-", " "
    )
    return len(_words(about) & _words(instructions))


def choose_detailed(
    components: Sequence[Mapping[str, Any]], instructions: str, limit: int = MAX_DETAILED
) -> list[str]:
    """The keys worth looking up in full: the most relevant to the instructions (at least
    one shared word), in catalog order among equals; none relevant (instructions written in
    a conversation, say): the first ones of the catalog."""
    scored = [(relevance(c, instructions), i, str(c.get("key"))) for i, c in enumerate(components)]
    relevant = [key for score, _, key in sorted(scored, key=lambda t: (-t[0], t[1])) if score]
    return (relevant or [key for _, _, key in scored])[:limit]


def _options(
    prop: Mapping[str, Any], remote: Sequence[Mapping[str, Any]] | None
) -> tuple[str, ...]:
    values: list[str] = []
    for option in list(remote or []) + list(prop.get("options") or []):
        if isinstance(option, Mapping):
            label, value = option.get("label"), option.get("value")
            values.append(f"{label}={value}" if label not in (None, value) else str(value))
        else:
            values.append(str(option))
    return tuple(dict.fromkeys(values))[:MAX_OPTIONS]


def to_action(
    component: Mapping[str, Any],
    *,
    detailed: bool = False,
    remote_options: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> CatalogAction:
    """A catalog component as the prompt shows it; the app prop is left out."""
    props = []
    if detailed:
        for prop in component.get("configurable_props") or []:
            if not isinstance(prop, Mapping) or prop.get("type") == "app" or not prop.get("name"):
                continue
            name = str(prop["name"])
            props.append(
                CatalogProp(
                    name=name,
                    type=str(prop.get("type") or "string"),
                    label=str(prop.get("label") or ""),
                    description=str(prop.get("description") or "")[:300],
                    optional=bool(prop.get("optional")),
                    options=_options(prop, (remote_options or {}).get(name)),
                )
            )
    return CatalogAction(
        key=str(component.get("key")),
        name=str(component.get("name") or ""),
        description=str(component.get("description") or "")[:300],
        version=str(component.get("version") or ""),
        props=tuple(props),
        detailed=detailed,
    )


# --- the calls a module makes -------------------------------------------------------------


@dataclass(frozen=True)
class ActionCall:
    """An execute_action call with a literal key; `props` when its props are a literal."""

    key: str
    props: tuple[str, ...] | None
    line: int | None = None


def _python_calls(code: str) -> list[ActionCall]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if name != "execute_action":
            continue
        args = list(node.args)
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        key_node = args[1] if len(args) > 1 else keywords.get("tool_name")
        params = args[2] if len(args) > 2 else keywords.get("tool_params")
        if not (isinstance(key_node, ast.Constant) and isinstance(key_node.value, str)):
            continue
        props: tuple[str, ...] | None = None
        if isinstance(params, ast.Dict) and all(
            isinstance(k, ast.Constant) and isinstance(k.value, str) for k in params.keys
        ):
            props = tuple(str(k.value) for k in params.keys if isinstance(k, ast.Constant))
        calls.append(ActionCall(key_node.value, props, node.lineno))
    return calls


_JS_CALL = re.compile(
    r"executeAction\(\s*[^,()]+,\s*([\"'`])([^\"'`]+)\1\s*(?:,\s*\{([^{}]*)\})?", re.S
)
_JS_KEY = re.compile(r"(?:^|,)\s*[\"']?([A-Za-z_$][\w$]*)[\"']?\s*:")


def _js_calls(code: str) -> list[ActionCall]:
    calls = []
    for match in _JS_CALL.finditer(code):
        body = match.group(3)
        props = tuple(_JS_KEY.findall(body)) if body is not None else None
        line = code.count("\n", 0, match.start()) + 1
        calls.append(ActionCall(match.group(2), props, line))
    return calls


def action_calls(code: str, language: str = "python") -> list[ActionCall]:
    return _js_calls(code) if language == "nodejs" else _python_calls(code)


def catalog_problems(calls: Iterable[ActionCall], accounts: Sequence[AccountRef]) -> list[Problem]:
    """An action key that is in no looked-up catalog of the connected apps is refused (only
    when a catalog was looked up at all: without one, nothing is known)."""
    known = {a.key: account for account in accounts for a in account.actions}
    if not known:
        return []
    problems = []
    for call in calls:
        if call.key in known:
            continue
        listed = ", ".join(sorted(known)[:10])
        problems.append(
            Problem(
                Rule.UNKNOWN_ACTION,
                f"execute_action: {call.key!r} is not an action in Pipedream's catalog for the "
                f"connected apps; use one of: {listed}",
                call.line,
            )
        )
    return problems


def describe_calls(calls: Iterable[ActionCall], accounts: Sequence[AccountRef]) -> str | None:
    """One line for the thread: which catalog action(s) the code runs, with which props."""
    by_key = {a.key: (account, a) for account in accounts for a in account.actions}
    said = []
    for call in dict.fromkeys(calls):
        found = by_key.get(call.key)
        if found is None:
            continue
        account, action = found
        what = f"`{call.key}`"
        if action.name:
            what += f" ({account.app}: {action.name}"
            what += f", version {action.version})" if action.version else ")"
        if call.props is not None:
            what += " with props " + (", ".join(call.props) or "none")
        said.append(what + f" on account {account.name}")
    if not said:
        return None
    return "Pipedream action chosen from the catalog: " + "; ".join(said) + "."
