"""The agent's check of code a model wrote, before it becomes a revision. Pure: nothing is run.

Builds on `docrelay.reconcile.codecheck` (compiles; defines `lambda_handler(event, context)`,
the same check every revision gets) and adds what generated code must also respect:

- imports: only the standard library (less a few modules the contract never needs) and the
  packages the run image offers (`ImportPolicy`);
- secrets: read through `os.environ` / `os.getenv` only, and never printed, logged, raised in
  an exception message or returned by `lambda_handler` (its result and the exception message
  land in the run's status).

The secret check follows values read from the environment through assignments, containers,
f-strings, string methods and functions returning them. It is a static guard against the
mistakes models make, not a proof: masking of stored logs stays the backstop.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from docrelay.reconcile.codecheck import HANDLER_NAME, CodeProblem, check_code

SDK_MODULE = "docrelay.sdk"
# What the run image offers besides the standard library. httpx and requests: direct calls to
# the Integration's egress hosts; pydantic: the platform's per-document-type models.
DEFAULT_PACKAGES = frozenset({SDK_MODULE, "httpx", "requests", "pydantic"})
# Standard-library modules generated code never needs and that would defeat review: spawning
# processes, native calls, and dynamic imports (which this check cannot follow).
DENIED_STDLIB = frozenset({"subprocess", "multiprocessing", "ctypes", "pty", "importlib"})
# The runner's own variables (docs/runner.md): never secrets.
RUNTIME_PREFIX = "DOCRELAY_"

_LOG_METHODS = frozenset(
    {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "log"}
)
# Calls whose result carries their arguments' value (a secret stays a secret).
_TRANSPARENT_CALLS = frozenset(
    {
        "str", "repr", "format", "bytes", "bytearray", "dict", "list", "tuple", "set",
        "sorted", "reversed", "json.dumps", "base64.b64encode", "base64.urlsafe_b64encode",
        "base64.standard_b64encode", "base64.b32encode", "base64.b16encode",
        "urllib.parse.quote", "urllib.parse.quote_plus", "urllib.parse.urlencode",
        "quote", "quote_plus", "urlencode",
    }
)  # fmt: skip
_ENV_FILES = re.compile(r"^/proc/(self|\d+|thread-self)/environ$")


class Rule(StrEnum):
    """Why generated code is refused; the names of the reconcile check are kept."""

    NO_CODE = "NoCode"
    SYNTAX_ERROR = CodeProblem.SYNTAX_ERROR.value
    MISSING_HANDLER = CodeProblem.MISSING_HANDLER.value
    ASYNC_HANDLER = CodeProblem.ASYNC_HANDLER.value
    HANDLER_SIGNATURE = CodeProblem.HANDLER_SIGNATURE.value
    DISALLOWED_IMPORT = "DisallowedImport"
    SECRET_ACCESS = "SecretAccess"
    SECRET_OUTPUT = "SecretOutput"
    UNKNOWN_SECRET = "UnknownSecret"
    # An execute_action key not in Pipedream's catalog for the connected apps (agent/catalog.py).
    UNKNOWN_ACTION = "UnknownAction"
    # Found by the loop, not in the code: the reply was cut short; the fix changed nothing.
    TRUNCATED = "Truncated"
    UNCHANGED = "Unchanged"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the code, where it is (line from 1) and what to do."""

    rule: Rule
    message: str
    line: int | None = None

    def describe(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass(frozen=True)
class ImportPolicy:
    """What code may import: the standard library less `denied_stdlib`, plus `packages`
    (each with its submodules). Match `packages` to the run image."""

    packages: frozenset[str] = DEFAULT_PACKAGES
    denied_stdlib: frozenset[str] = DENIED_STDLIB
    # The operator's Python decides what "standard library" means (3.11 here).
    stdlib: frozenset[str] = field(default_factory=lambda: frozenset(sys.stdlib_module_names))

    def allows(self, module: str) -> bool:
        top = module.partition(".")[0]
        if top in self.stdlib and top not in self.denied_stdlib:
            return True
        return any(module == p or module.startswith(p + ".") for p in self.packages)

    def describe(self) -> str:
        return "the standard library and " + ", ".join(sorted(self.packages))


DEFAULT_POLICY = ImportPolicy()

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
_PYTHON_TAGS = frozenset({"python", "py", "python3"})
_JS_TAGS = frozenset({"javascript", "js", "mjs", "cjs", "node", "nodejs"})
_JS_HANDLER = re.compile(r"\bhandler\b")


def extract_code(reply: str, language: str = "python") -> str:
    """The code in a model's reply: a fenced ```python block (```javascript for "nodejs"),
    or the whole reply.

    Several blocks: the first that defines the handler, else the first block in the
    language (or untagged). An opening fence with no closing one (a reply cut short) yields
    what follows it.
    """
    tags = _JS_TAGS if language == "nodejs" else _PYTHON_TAGS
    defines = (
        _JS_HANDLER
        if language == "nodejs"
        else re.compile(rf"^(async\s+)?def\s+{HANDLER_NAME}\b", re.M)
    )
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(reply)]
    candidates = [body for tag, body in blocks if tag in tags or not tag]
    for body in candidates:
        if defines.search(body):
            return body.strip("\n")
    if candidates:
        return candidates[0].strip("\n")
    opening = re.search(r"^[ \t]*```[^\n]*\n", reply, re.M)
    if opening and not blocks:
        return reply[opening.end() :].strip("\n")
    return reply.strip("\n")


# A syntax check the caller supplies (this module runs nothing): for JavaScript, `node --check`
# (docrelay.agent.nodecheck). It returns the problem, or None when the code parses.
SyntaxCheck = Callable[[str], "Problem | None"]


def check_generated_code(
    source: str,
    *,
    secret_names: Collection[str] | None = None,
    policy: ImportPolicy = DEFAULT_POLICY,
    language: str = "python",
    syntax_check: SyntaxCheck | None = None,
) -> list[Problem]:
    """Every problem found (empty: the code may become a revision), ordered by line.

    `secret_names`: the integration's secrets; when given, reading any other variable is a
    problem (it would fail at run time with a KeyError or read None). `language` "nodejs":
    JavaScript, checked by `check_generated_js` (and `syntax_check`, when given).
    """
    if not source.strip():
        return [Problem(Rule.NO_CODE, "the reply holds no code")]
    if language == "nodejs":
        return check_generated_js(source, secret_names=secret_names, syntax_check=syntax_check)
    base = check_code(source)
    problems: list[Problem] = []
    if not base.valid:
        assert base.reason is not None and base.message is not None
        problem = Problem(Rule(base.reason.value), base.message, base.line)
        if base.reason is CodeProblem.SYNTAX_ERROR:
            return [problem]  # nothing more can be read
        problems.append(problem)
    tree = ast.parse(source)
    problems += _check_imports(tree, policy)
    problems += _SecretCheck(tree, secret_names).problems()
    return sorted(problems, key=lambda p: (p.line or 0, p.rule))


def describe_problems(problems: Collection[Problem]) -> str:
    """One line per problem, for a prompt or a condition message."""
    return "\n".join(f"- {p.describe()}" for p in problems)


# --- imports -----------------------------------------------------------------------------------


def _check_imports(tree: ast.Module, policy: ImportPolicy) -> Iterator[Problem]:
    offered = policy.describe()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not policy.allows(alias.name):
                    yield _import_problem(alias.name, node.lineno, offered)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield Problem(
                    Rule.DISALLOWED_IMPORT,
                    "relative import: the code is a single module with no package",
                    node.lineno,
                )
                continue
            module = node.module or ""
            # `from docrelay import sdk` names an allowed module through its parent.
            if policy.allows(module) or all(
                policy.allows(f"{module}.{a.name}") for a in node.names
            ):
                continue
            yield _import_problem(module, node.lineno, offered)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            yield Problem(
                Rule.DISALLOWED_IMPORT,
                "__import__() is a dynamic import, which cannot be checked: import by name",
                node.lineno,
            )


def _import_problem(module: str, line: int, offered: str) -> Problem:
    return Problem(
        Rule.DISALLOWED_IMPORT,
        f"import of {module!r}: the runtime offers only {offered}",
        line,
    )


# --- secrets -----------------------------------------------------------------------------------


def _all_args(args: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return [*args.posonlyargs, *args.args, *args.kwonlyargs, *extra]


def _bound_names(target: ast.expr) -> Iterator[ast.Name]:
    """The variables an assignment target stores into: `a`, `a, b`, and `a` of `a["k"]` (the
    dict now holds the value; its index does not). An attribute (`client.token = ...`) taints
    nothing: every later use of the object (`client.get(...)`) would look like a secret."""
    if isinstance(target, ast.Name):
        yield target
    elif isinstance(target, ast.Tuple | ast.List):
        for element in target.elts:
            yield from _bound_names(element)
    elif isinstance(target, ast.Starred | ast.Subscript):
        yield from _bound_names(target.value)


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of names, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class _SecretCheck:
    """Where environment values are read, and whether one reaches output."""

    def __init__(self, tree: ast.Module, secret_names: Collection[str] | None) -> None:
        self.tree = tree
        self.secret_names = None if secret_names is None else frozenset(secret_names)
        self.os_names: set[str] = set()  # names bound to the os module
        self.environ_names: set[str] = set()  # names bound to os.environ
        self.getenv_names: set[str] = set()  # names bound to os.getenv
        self.log_names: set[str] = {"logging"}  # loggers, by name
        # Variables holding a secret, as (scope, name): a name in one function is not the
        # same variable as that name in another.
        self.tainted: set[tuple[int, str]] = set()
        self.tainted_functions: set[str] = set()  # functions returning one
        self._scope_of: dict[int, ast.AST] = {}  # node id -> its function, or the module
        self._parent: dict[int, ast.AST | None] = {id(tree): None}
        self._locals: dict[int, set[str]] = {}
        self._map_scopes(tree, tree)
        self._bind_names()
        self._propagate()

    # Scopes ------------------------------------------------------------------------------

    def _map_scopes(self, node: ast.AST, scope: ast.AST) -> None:
        names = self._locals.setdefault(id(scope), set())
        declared_global: set[str] = set()
        for child in ast.iter_child_nodes(node):
            self._scope_of[id(child)] = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                names.add(getattr(child, "name", ""))
                self._parent[id(child)] = scope
                self._locals[id(child)] = {a.arg for a in _all_args(child.args)}
                self._map_scopes(child, child)
                continue
            if isinstance(child, ast.Global | ast.Nonlocal):
                declared_global.update(child.names)
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Store | ast.Del):
                names.add(child.id)
            self._map_scopes(child, scope)
        names -= declared_global

    def _key(self, name: ast.Name) -> tuple[int, str]:
        """The variable a name refers to: the nearest scope that binds it, else the module."""
        scope: ast.AST | None = self._scope_of.get(id(name), self.tree)
        while scope is not None:
            if name.id in self._locals.get(id(scope), ()):
                return id(scope), name.id
            scope = self._parent.get(id(scope))
        return id(self.tree), name.id

    # Names -------------------------------------------------------------------------------

    def _bind_names(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "os":
                        self.os_names.add(alias.asname or "os")
                    if alias.name == "logging":
                        self.log_names.add(alias.asname or "logging")
            elif isinstance(node, ast.ImportFrom) and node.module == "os":
                for alias in node.names:
                    bound = alias.asname or alias.name
                    if alias.name == "environ":
                        self.environ_names.add(bound)
                    elif alias.name == "getenv":
                        self.getenv_names.add(bound)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                name = _dotted(node.value.func) or ""
                if name.endswith("getLogger") or name.endswith("getChild"):
                    self.log_names.update(t.id for t in node.targets if isinstance(t, ast.Name))

    def _is_environ(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.environ_names
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id in self.os_names
        )

    def _is_getenv(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.getenv_names
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "getenv"
            and isinstance(node.value, ast.Name)
            and node.value.id in self.os_names
        )

    def _env_read_name(self, node: ast.AST) -> tuple[bool, str | None]:
        """(is an environment read, the variable's name when it is a literal)."""
        key: ast.expr | None = None
        if isinstance(node, ast.Subscript) and self._is_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Call) and node.args and (
            self._is_getenv(node.func)
            or (isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop")
                and self._is_environ(node.func.value))
        ):  # fmt: skip
            key = node.args[0]
        else:
            return False, None
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return True, key.value
        return True, None

    # Taint -------------------------------------------------------------------------------

    def _propagate(self) -> None:
        # Flow-insensitive: a name that ever holds a secret is treated as always holding one.
        changed = True
        while changed:
            changed = False
            for node in ast.walk(self.tree):
                targets: list[ast.expr] = []
                value: ast.expr | None = None
                if isinstance(node, ast.Assign):
                    targets, value = node.targets, node.value
                elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
                    targets, value = [node.target], node.value
                elif isinstance(node, ast.For | ast.comprehension):
                    targets, value = [node.target], node.iter
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    targets, value = [node.optional_vars], node.context_expr
                elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    if node.name not in self.tainted_functions and any(
                        isinstance(r, ast.Return) and r.value is not None
                        and self.tainted_expr(r.value)
                        for r in ast.walk(node)
                    ):  # fmt: skip
                        self.tainted_functions.add(node.name)
                        changed = True
                    continue
                if value is None or not self.tainted_expr(value):
                    continue
                for target in targets:
                    for name in _bound_names(target):
                        if self._key(name) not in self.tainted:
                            self.tainted.add(self._key(name))
                            changed = True

    def tainted_expr(self, node: ast.AST) -> bool:
        """Whether the value of `node` may hold (part of) a secret."""
        is_read, name = self._env_read_name(node)
        if is_read:
            return not (name and name.startswith(RUNTIME_PREFIX))
        if isinstance(node, ast.Name):
            return self._key(node) in self.tainted
        if isinstance(node, ast.expr) and self._is_environ(node):
            return True  # the whole environment
        if isinstance(node, ast.Call):
            return self._tainted_call(node)
        if isinstance(node, ast.Compare | ast.Lambda):
            return False  # a comparison yields a bool; a lambda is not called here
        return any(self.tainted_expr(child) for child in ast.iter_child_nodes(node))

    def _tainted_call(self, node: ast.Call) -> bool:
        func = node.func
        if isinstance(func, ast.Name) and func.id in self.tainted_functions:
            return True
        arguments = [*node.args, *(k.value for k in node.keywords)]
        if isinstance(func, ast.Attribute):
            if self.tainted_expr(func.value):
                return True  # a method of a secret (.strip(), .encode(), .items())
            if func.attr in ("format", "join", "format_map"):
                return any(self.tainted_expr(a) for a in arguments)
        name = _dotted(func)
        if name in _TRANSPARENT_CALLS:
            return any(self.tainted_expr(a) for a in arguments)
        return False  # other calls (an HTTP request with a secret header) return new values

    # Findings ----------------------------------------------------------------------------

    def problems(self) -> Iterator[Problem]:
        for node in ast.walk(self.tree):
            yield from self._access(node)
            if isinstance(node, ast.Call) and self._is_output(node.func):
                arguments = [*node.args, *(k.value for k in node.keywords)]
                if any(self.tainted_expr(a) for a in arguments):
                    yield Problem(
                        Rule.SECRET_OUTPUT,
                        f"{_dotted(node.func) or 'a call'}() outputs a value read from "
                        "os.environ (a secret): never print or log a secret",
                        node.lineno,
                    )
            elif isinstance(node, ast.Raise) and node.exc and self._raises_secret(node.exc):
                yield Problem(
                    Rule.SECRET_OUTPUT,
                    "the exception carries a value read from os.environ (a secret): "
                    "its message is shown in the run's status",
                    node.lineno,
                )
        for handler in self._handlers():
            for node in ast.walk(handler):
                if (
                    isinstance(node, ast.Return)
                    and node.value is not None
                    and self.tainted_expr(node.value)
                ):
                    yield Problem(
                        Rule.SECRET_OUTPUT,
                        f"{HANDLER_NAME} returns a value read from os.environ (a "
                        "secret): its result is shown in the run's status",
                        node.lineno,
                    )

    def _raises_secret(self, exc: ast.expr) -> bool:
        # The exception's arguments become its message: `raise X(f"... {key}")`.
        if isinstance(exc, ast.Call):
            arguments = [*exc.args, *(k.value for k in exc.keywords)]
            return any(self.tainted_expr(a) for a in arguments)
        return self.tainted_expr(exc)

    def _handlers(self) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
        for node in self.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
                node.name == HANDLER_NAME
            ):
                yield node

    def _is_output(self, func: ast.expr) -> bool:
        name = _dotted(func)
        if name in ("print", "pprint", "pprint.pprint", "pprint.pp", "pp"):
            return True
        if name and re.fullmatch(r"sys\.(stdout|stderr)\.(write|writelines)", name):
            return True
        if isinstance(func, ast.Attribute) and func.attr in _LOG_METHODS:
            receiver = _dotted(func.value) or ""
            return receiver in self.log_names or "log" in receiver.lower()
        return False

    def _access(self, node: ast.AST) -> Iterator[Problem]:
        line = getattr(node, "lineno", None)
        if isinstance(node, ast.Attribute) and node.attr in ("environb", "getenvb"):
            yield Problem(
                Rule.SECRET_ACCESS,
                f'os.{node.attr}: read secrets with os.environ["NAME"] only',
                line,
            )
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and _ENV_FILES.match(node.value)
        ):
            yield Problem(
                Rule.SECRET_ACCESS,
                f'{node.value}: read secrets with os.environ["NAME"] only',
                line,
            )
        elif self.secret_names is not None:
            is_read, name = self._env_read_name(node)
            if (
                is_read
                and name is not None
                and not name.startswith(RUNTIME_PREFIX)
                and name not in self.secret_names
            ):
                known = ", ".join(sorted(self.secret_names)) or "none"
                yield Problem(
                    Rule.UNKNOWN_SECRET,
                    f"reads {name!r}, which is not one of the integration's secrets ({known})",
                    line,
                )


# --- JavaScript (spec.runtime.nodejs) ------------------------------------------------------------

JS_SDK_MODULE = "@docrelay/sdk"
# Node.js's built-in modules generated code may import (as "node:x" or "x").
JS_BUILTINS = frozenset(
    {
        "assert", "assert/strict", "buffer", "crypto", "dns", "dns/promises", "events", "fs",
        "fs/promises", "http", "https", "net", "os", "path", "path/posix", "perf_hooks",
        "process", "querystring", "readline", "stream", "stream/promises", "stream/web",
        "string_decoder", "timers", "timers/promises", "tls", "url", "util", "util/types",
        "zlib",
    }
)  # fmt: skip
# Built-ins the contract never needs and that would defeat review: processes, threads, code
# evaluation, native add-ons. Anything not listed above is refused as well.
JS_DENIED = frozenset(
    {"child_process", "cluster", "worker_threads", "vm", "module", "inspector", "repl", "v8"}
)

_JS_STATIC_IMPORT = re.compile(
    r"""^\s*(?:import|export)\b[^'"`;]*?\bfrom\s*(['"])([^'"]+)\1"""
    r"""|^\s*import\s*(['"])([^'"]+)\3""",
    re.M,
)
_JS_CALL_IMPORT = re.compile(r"""\b(require|import)\s*\(\s*(?:(['"])([^'"]*)\2\s*\)|([^)'"]))""")
_JS_ENV_READ = re.compile(r"""\bprocess\.env(?:\.([A-Za-z_$][\w$]*)|\[\s*(['"])([^'"]+)\2\s*\])?""")
_JS_OUTPUT = re.compile(
    r"\b(?:console\.(?:log|info|warn|error|debug|trace|dir)|process\.(?:stdout|stderr)\.write)"
    r"\s*\("
)
_JS_THROW = re.compile(r"\bthrow\b")
# A value computed by a call that returns something new (an HTTP answer sent with a secret
# header), not the secret itself: the taint stops there, as in the Python check.
_JS_NEW_VALUE = re.compile(
    r"^\s*await\b|\bnew\s|\b(?:fetch|request|apiRequest|executeAction|uploadFile)\s*\("
)
_JS_ASSIGN = re.compile(r"\b(?:const|let|var)\s+(?:([A-Za-z_$][\w$]*)|\{([^}]*)\})\s*=\s*([^;\n]*)")


def _line_of(source: str, index: int) -> int:
    return source.count("\n", 0, index) + 1


def _strip_js_comments(source: str) -> str:
    """The source with comments blanked (lines kept), so commented-out code is not checked."""
    out = []
    i, n = 0, len(source)
    quote: str | None = None
    while i < n:
        ch = source[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(source[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
            out.append(ch)
        elif source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
            i = end
            continue
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("".join(c if c == "\n" else " " for c in source[i:end]))
            i = end
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _js_module_allowed(name: str) -> bool:
    if name == JS_SDK_MODULE:
        return True
    bare = name.removeprefix("node:")
    return bare in JS_BUILTINS and bare.partition("/")[0] not in JS_DENIED


def _statement_at(source: str, start: int) -> str:
    """From `start` to the end of its statement (a `;` or a newline at depth 0, roughly)."""
    depth = 0
    for i in range(start, min(len(source), start + 4000)):
        ch = source[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return source[start:i]
        elif depth <= 0 and (ch == ";" or (ch == "\n" and i > start)):
            return source[start:i]
    return source[start : start + 4000]


def check_generated_js(
    source: str,
    *,
    secret_names: Collection[str] | None = None,
    syntax_check: SyntaxCheck | None = None,
) -> list[Problem]:
    """JavaScript a model wrote: it parses (`syntax_check`, i.e. `node --check`), exports a
    handler, imports only Node's allowed built-ins and @docrelay/sdk (no computed imports),
    reads only its secrets from process.env and never prints, throws or returns one. A
    pattern check, like the Python one a guard against common mistakes, not a proof."""
    if syntax_check is not None:
        problem = syntax_check(source)
        if problem is not None:
            return [problem]
    problems: list[Problem] = []
    base = check_code(source, "nodejs")
    if not base.valid:
        assert base.reason is not None and base.message is not None
        problems.append(Problem(Rule(base.reason.value), base.message, base.line))
    code = _strip_js_comments(source)
    denied = ", ".join(sorted(JS_DENIED))
    offered = f"Node.js's built-in modules (not {denied}) and {JS_SDK_MODULE}"
    for match in _JS_STATIC_IMPORT.finditer(code):
        name = match.group(2) or match.group(4)
        if not _js_module_allowed(name):
            problems.append(
                Problem(
                    Rule.DISALLOWED_IMPORT,
                    f"import of {name!r}: the runtime offers only {offered}",
                    _line_of(code, match.start()),
                )
            )
    for match in _JS_CALL_IMPORT.finditer(code):
        line = _line_of(code, match.start())
        if match.group(3) is None:
            problems.append(
                Problem(
                    Rule.DISALLOWED_IMPORT,
                    f"{match.group(1)}() of a computed name cannot be checked: import by name",
                    line,
                )
            )
        elif not _js_module_allowed(match.group(3)):
            problems.append(
                Problem(
                    Rule.DISALLOWED_IMPORT,
                    f"{match.group(1)} of {match.group(3)!r}: the runtime offers only {offered}",
                    line,
                )
            )
    problems += _js_secret_problems(code, secret_names)
    return sorted(problems, key=lambda p: (p.line or 0, p.rule))


def _js_secret_problems(code: str, secret_names: Collection[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    known = None if secret_names is None else frozenset(secret_names)
    for match in _JS_ENV_READ.finditer(code):
        name = match.group(1) or match.group(3)
        if name and known is not None and not name.startswith(RUNTIME_PREFIX) and name not in known:
            listed = ", ".join(sorted(known)) or "none"
            problems.append(
                Problem(
                    Rule.UNKNOWN_SECRET,
                    f"reads {name!r}, which is not one of the integration's secrets ({listed})",
                    _line_of(code, match.start()),
                )
            )
    # Names that hold a secret: assigned from process.env or from another such name.
    tainted: set[str] = set()
    changed = True
    while changed:
        changed = False
        for match in _JS_ASSIGN.finditer(code):
            value = match.group(3)
            if _JS_NEW_VALUE.search(value) or not _js_tainted(value, tainted):
                continue
            names = [match.group(1)] if match.group(1) else re.findall(
                r"(?:^|,)\s*(?:[\w$]+\s*:\s*)?([A-Za-z_$][\w$]*)", match.group(2) or ""
            )
            for name in names:
                if name and name not in tainted:
                    tainted.add(name)
                    changed = True
    for pattern, what in (
        (_JS_OUTPUT, "prints a value read from process.env (a secret): never print or log it"),
        (_JS_THROW, "the error carries a value read from process.env (a secret): its message is "
                    "shown in the run's status"),
        (re.compile(r"\breturn\b"), "the handler returns a value read from process.env (a "
                                     "secret): its result is shown in the run's status"),
    ):
        for match in pattern.finditer(code):
            statement = _statement_at(code, match.end())
            if _js_tainted(statement, tainted):
                problems.append(Problem(Rule.SECRET_OUTPUT, what, _line_of(code, match.start())))
    return problems


def _js_tainted(text: str, tainted: set[str]) -> bool:
    for match in _JS_ENV_READ.finditer(text):
        name = match.group(1) or match.group(3)
        if not (name and name.startswith(RUNTIME_PREFIX)):
            return True
    # A secret's name used as a value (not as a property name after a dot, or a key).
    return any(
        re.search(rf"(?<![\w$.]){re.escape(name)}(?![\w$]|\s*:(?!:))", text) for name in tainted
    )
