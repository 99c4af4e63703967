"""Static check of an integration's code: it compiles and defines lambda_handler(event, context).

Pure: the code is parsed and compiled, never imported or run. The check uses the operator's
Python, so syntax newer than it (say, a 3.13-only construct) is reported as a syntax error.
JavaScript (`spec.runtime.nodejs`) is not parsed here (the operator has no JavaScript engine):
the check asks only that the code exports a `handler`; a syntax error shows when the code is
loaded (a run's ConfigurationError) and in the agent's checks, which run `node --check`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from enum import StrEnum

HANDLER_NAME = "lambda_handler"
CODE_FILENAME = "handler.py"


class CodeProblem(StrEnum):
    """Why code is not valid; also the condition reason a user sees."""

    SYNTAX_ERROR = "SyntaxError"
    MISSING_HANDLER = "MissingHandler"
    ASYNC_HANDLER = "AsyncHandler"
    HANDLER_SIGNATURE = "HandlerSignature"


@dataclass(frozen=True)
class CodeCheck:
    """The result: valid, or the problem with its message and position (lines from 1)."""

    valid: bool
    reason: CodeProblem | None = None
    message: str | None = None
    line: int | None = None
    column: int | None = None

    def describe(self) -> str:
        """One line for a condition message: where and what."""
        if self.valid:
            return "the code compiles and defines its handler"
        where = ""
        if self.line is not None:
            where = f"line {self.line}"
            if self.column is not None:
                where += f", column {self.column + 1}"
            where += ": "
        return f"{where}{self.message}"


VALID = CodeCheck(valid=True)

# How JavaScript exports its handler, as Lambda's Node.js runtime finds it: an ES module's
# `export [async] function handler`, `export const|let|var handler`, `export { handler }`,
# or CommonJS `exports.handler`, `module.exports.handler`, `module.exports = { handler }`.
_JS_HANDLER_EXPORT = re.compile(
    r"^\s*export\s+(?:async\s+)?function\s*\*?\s*handler\s*\("
    r"|^\s*export\s+(?:const|let|var)\s+handler\b"
    r"|^\s*export\s*\{[^}]*\bhandler\b[^}]*\}"
    r"|\b(?:module\.)?exports\.handler\s*="
    r"|\bmodule\.exports\s*=\s*\{[^}]*\bhandler\b",
    re.M,
)


def check_js_code(source: str) -> CodeCheck:
    """JavaScript: it exports a handler (syntax is checked where a JavaScript engine is)."""
    if "\0" in source:
        return CodeCheck(
            valid=False, reason=CodeProblem.SYNTAX_ERROR, message="source contains NUL bytes"
        )
    if _JS_HANDLER_EXPORT.search(source):
        return VALID
    return CodeCheck(
        valid=False,
        reason=CodeProblem.MISSING_HANDLER,
        message=(
            "no handler is exported: export async function handler(event, context), "
            "or exports.handler = async (event, context) => ..."
        ),
    )


def check_code(source: str, language: str = "python") -> CodeCheck:
    """Check `source` (Python, or JavaScript for language "nodejs") without running it."""
    if language == "nodejs":
        return check_js_code(source)
    if "\0" in source:  # Python versions word this differently; say it one way
        return CodeCheck(
            valid=False, reason=CodeProblem.SYNTAX_ERROR, message="source contains NUL bytes"
        )
    try:
        tree = ast.parse(source, filename=CODE_FILENAME)
        # ast.parse accepts a few things the compiler refuses ('return' outside a function).
        compile(tree, CODE_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as error:
        column = error.offset - 1 if error.offset and error.offset > 0 else None
        return CodeCheck(
            valid=False,
            reason=CodeProblem.SYNTAX_ERROR,
            message=error.msg,
            line=error.lineno,
            column=column,
        )
    return _check_handler(tree)


def _check_handler(tree: ast.Module) -> CodeCheck:
    # The last top-level definition wins, as it does when the module runs.
    handler: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == HANDLER_NAME:
            handler = node
    if handler is None:
        return CodeCheck(
            valid=False,
            reason=CodeProblem.MISSING_HANDLER,
            message="no top-level function lambda_handler(event, context) is defined",
        )
    if isinstance(handler, ast.AsyncFunctionDef):
        return CodeCheck(
            valid=False,
            reason=CodeProblem.ASYNC_HANDLER,
            message="lambda_handler must be a plain def, not async def: it is called directly",
            line=handler.lineno,
        )
    if not _accepts_two_positional(handler.args):
        return CodeCheck(
            valid=False,
            reason=CodeProblem.HANDLER_SIGNATURE,
            message=(
                f"lambda_handler({_signature(handler.args)}) cannot be called as "
                "lambda_handler(event, context)"
            ),
            line=handler.lineno,
        )
    return VALID


def _accepts_two_positional(args: ast.arguments) -> bool:
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    required_keyword_only = sum(1 for default in args.kw_defaults if default is None)
    if required > 2 or required_keyword_only:
        return False
    return positional >= 2 or args.vararg is not None


def _signature(args: ast.arguments) -> str:
    names = [a.arg for a in (*args.posonlyargs, *args.args)]
    if args.vararg:
        names.append(f"*{args.vararg.arg}")
    names.extend(a.arg for a in args.kwonlyargs)
    if args.kwarg:
        names.append(f"**{args.kwarg.arg}")
    return ", ".join(names)
