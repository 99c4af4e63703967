"""The static check of integration code: what a user sees in CodeReady."""

from __future__ import annotations

import pytest

from docrelay.reconcile.codecheck import CodeCheck, CodeProblem, check_code

GOOD = "def lambda_handler(event, context):\n    return event\n"


@pytest.mark.parametrize(
    "source",
    [
        GOOD,
        "import json\n\ndef lambda_handler(event, context=None):\n    return json.dumps(event)\n",
        "def lambda_handler(*args):\n    return args\n",
        "def lambda_handler(event, context, *, debug=False):\n    pass\n",
        "def lambda_handler(event, /, context):\n    pass\n",
        # the last definition wins, as when the module runs
        "async def lambda_handler(e, c):\n    pass\ndef lambda_handler(e, c):\n    pass\n",
    ],
)
def test_valid_code(source: str) -> None:
    assert check_code(source) == CodeCheck(valid=True)


@pytest.mark.parametrize(
    ("source", "reason", "line", "described"),
    [
        (
            "def lambda_handler(event, context):\n    return (\n",
            CodeProblem.SYNTAX_ERROR,
            2,
            "line 2, column 12: '(' was never closed",
        ),
        (
            "x = 1\n\ndef lambda_handler(event, context)\n    pass\n",
            CodeProblem.SYNTAX_ERROR,
            3,
            "line 3, column 35: expected ':'",
        ),
        (
            "return 1\ndef lambda_handler(event, context):\n    pass\n",
            CodeProblem.SYNTAX_ERROR,
            1,
            "line 1, column 1: 'return' outside function",
        ),
        (
            "def handler(event, context):\n    pass\n",
            CodeProblem.MISSING_HANDLER,
            None,
            "no top-level function lambda_handler(event, context) is defined",
        ),
        (
            "class A:\n    def lambda_handler(self, event, context):\n        pass\n",
            CodeProblem.MISSING_HANDLER,
            None,
            "no top-level function lambda_handler(event, context) is defined",
        ),
        (
            "\nasync def lambda_handler(event, context):\n    pass\n",
            CodeProblem.ASYNC_HANDLER,
            2,
            "line 2: lambda_handler must be a plain def, not async def: it is called directly",
        ),
        (
            "def lambda_handler(event):\n    pass\n",
            CodeProblem.HANDLER_SIGNATURE,
            1,
            "line 1: lambda_handler(event) cannot be called as lambda_handler(event, context)",
        ),
        (
            "def lambda_handler(event, context, extra):\n    pass\n",
            CodeProblem.HANDLER_SIGNATURE,
            1,
            "line 1: lambda_handler(event, context, extra) cannot be called as "
            "lambda_handler(event, context)",
        ),
        (
            "def lambda_handler(event, context, *, must):\n    pass\n",
            CodeProblem.HANDLER_SIGNATURE,
            1,
            "line 1: lambda_handler(event, context, must) cannot be called as "
            "lambda_handler(event, context)",
        ),
        ("a = '\0'\x00", CodeProblem.SYNTAX_ERROR, None, "source contains NUL bytes"),
    ],
)
def test_invalid_code(source: str, reason: CodeProblem, line: int | None, described: str) -> None:
    result = check_code(source)
    assert not result.valid
    assert result.reason is reason
    assert result.line == line
    assert result.describe() == described


@pytest.mark.parametrize(
    "source",
    [
        "export async function handler(event, context) {}\n",
        "export const handler = async (event) => ({ ok: true });\n",
        "async function handler() {}\nexport { handler };\n",
        "exports.handler = async function (event, context) {};\n",
        "module.exports.handler = async () => {};\n",
        "module.exports = { handler: async () => {} };\n",
    ],
)
def test_javascript_that_exports_a_handler_is_valid(source: str) -> None:
    assert check_code(source, "nodejs") == CodeCheck(valid=True)


@pytest.mark.parametrize(
    "source",
    [
        "export async function handle(event, context) {}\n",
        "async function handler() {}\n",  # defined, not exported
        "def lambda_handler(event, context):\n    pass\n",  # Python for a Node.js runtime
    ],
)
def test_javascript_without_an_exported_handler_is_missing_its_handler(source: str) -> None:
    result = check_code(source, "nodejs")
    assert (result.valid, result.reason) == (False, CodeProblem.MISSING_HANDLER)
    assert "export async function handler(event, context)" in result.describe()
