"""The agent's check of generated code: what a model is told when its code is refused."""

from __future__ import annotations

import pytest

from docrelay.agent.codecheck import (
    ImportPolicy,
    Problem,
    Rule,
    check_generated_code,
    extract_code,
)

HANDLER = "def lambda_handler(event, context):\n    return {'summary': 'ok'}\n"


def lines(*rows: str) -> str:
    return "\n".join(rows) + "\n"


# --- extraction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("def lambda_handler(e, c):\n    pass\n", "def lambda_handler(e, c):\n    pass"),
        ("Here it is:\n```python\nx = 1\n```\nDone.", "x = 1"),
        ("```py\nx = 1\n```", "x = 1"),
        ("```\nx = 1\n```", "x = 1"),
        # a usage example after the module: the block with the handler wins
        (
            "```python\ndef lambda_handler(e, c):\n    pass\n```\nTry:\n```python\nrun()\n```",
            "def lambda_handler(e, c):\n    pass",
        ),
        (
            "```bash\npip install x\n```\n```python\nimport os\n```",
            "import os",
        ),
        # cut off before the closing fence
        ("Sure.\n```python\ndef lambda_handler(e, c):\n    return (",
         "def lambda_handler(e, c):\n    return ("),
        ("", ""),
    ],
)  # fmt: skip
def test_extract_code(reply: str, code: str) -> None:
    assert extract_code(reply) == code


# --- the checks --------------------------------------------------------------------------------

VALID = [
    HANDLER,
    lines(
        "import os",
        "import json",
        "import httpx",
        "from docrelay.sdk import api_request, get_document",
        "",
        "KEY = os.environ['API_KEY']",
        "",
        "def lambda_handler(event, context):",
        "    doc = get_document(event['document_identifier'])",
        "    headers = {'Authorization': f'Bearer {KEY}'}",
        "    response = httpx.post('https://x.example', headers=headers, json=doc['data'],",
        "                          timeout=httpx.Timeout(30, connect=5))",
        "    response.raise_for_status()",
        "    print('exported', response.json()['id'])",  # the response is not the secret
        "    return {'summary': 'exported ' + event['document_identifier']}",
    ),
    lines(
        "from docrelay import sdk",
        "import logging",
        "import os",
        "log = logging.getLogger(__name__)",
        "def lambda_handler(event, context):",
        "    token = os.getenv('API_KEY')",
        "    log.info('token set: %s', token is not None)",  # a comparison is a bool
        "    log.info('length %d', len(token))",
        "    print(os.environ.get('DOCRELAY_RUN'))",  # the runner's own variable
        "    sdk.get_document(event['document_identifier'])",
    ),
    # the same name in two functions is two variables; an attribute taints no object
    lines(
        "import os",
        "import requests",
        "def auth():",
        "    value = os.environ['API_KEY']",
        "    session = requests.Session()",
        "    session.headers['Authorization'] = 'Bearer ' + value",
        "    return session",
        "def lambda_handler(event, context):",
        "    value = event['document_identifier']",
        "    print('document', value)",
        "    print(auth().get('https://x.example', timeout=(5, 30)).json())",
    ),
    lines(
        "import urllib.request, xml.etree.ElementTree as ET",
        "from pydantic import BaseModel",
        "import requests.adapters",
        "def lambda_handler(event, context):",
        "    pass",
    ),
]


@pytest.mark.parametrize("source", VALID)
def test_valid_code(source: str) -> None:
    assert check_generated_code(source, secret_names=["API_KEY"]) == []


PRINTS_KEY = (
    "line 3: print() outputs a value read from os.environ (a secret): never print or log a secret"
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("", [(Rule.NO_CODE, None)]),
        ("def lambda_handler(event, context):\n    return (\n", [(Rule.SYNTAX_ERROR, 2)]),
        ("x = 1\n\ndef lambda_handler(event, context)\n    pass\n", [(Rule.SYNTAX_ERROR, 3)]),
        ("def handler(event, context):\n    pass\n", [(Rule.MISSING_HANDLER, None)]),
        ("async def lambda_handler(event, context):\n    pass\n", [(Rule.ASYNC_HANDLER, 1)]),
        ("def lambda_handler(event):\n    pass\n", [(Rule.HANDLER_SIGNATURE, 1)]),
        # printing a secret, directly and through names
        (lines("import os", "def lambda_handler(event, context):",
               "    print(os.environ['API_KEY'])"), [(Rule.SECRET_OUTPUT, 3)]),
        (lines("import os", "KEY = os.environ['API_KEY']",
               "def lambda_handler(event, context):", "    print(f'key={KEY}')"),
         [(Rule.SECRET_OUTPUT, 4)]),
        (lines("from os import environ as env", "def lambda_handler(event, context):",
               "    headers = {'Authorization': 'Bearer ' + env['API_KEY'].strip()}",
               "    print(headers)"), [(Rule.SECRET_OUTPUT, 4)]),
        (lines("import os", "def lambda_handler(event, context):", "    headers = {}",
               "    headers['Authorization'] = os.environ['API_KEY']",
               "    print(headers)"), [(Rule.SECRET_OUTPUT, 5)]),
        (lines("import os", "KEY = None", "def setup():", "    global KEY",
               "    KEY = os.environ['API_KEY']", "def lambda_handler(event, context):",
               "    print(KEY)"), [(Rule.SECRET_OUTPUT, 7)]),
        (lines("import os as o", "import logging", "logger = logging.getLogger('x')",
               "def lambda_handler(event, context):",
               "    logger.debug('env %s', dict(o.environ))"), [(Rule.SECRET_OUTPUT, 5)]),
        (lines("import os, sys", "def token():", "    return os.getenv('API_KEY')",
               "def lambda_handler(event, context):",
               "    sys.stderr.write(token())"), [(Rule.SECRET_OUTPUT, 5)]),
        (lines("import os", "def lambda_handler(event, context):",
               "    key = os.environ['API_KEY']",
               "    raise RuntimeError(f'rejected key {key}')"), [(Rule.SECRET_OUTPUT, 4)]),
        (lines("import os", "def lambda_handler(event, context):",
               "    return {'key': os.environ['API_KEY']}"), [(Rule.SECRET_OUTPUT, 3)]),
        # reading secrets other than through os.environ / os.getenv
        (lines("import os", "def lambda_handler(event, context):",
               "    return os.environb[b'API_KEY']"), [(Rule.SECRET_ACCESS, 3)]),
        (lines("def lambda_handler(event, context):",
               "    return open('/proc/self/environ').read()"), [(Rule.SECRET_ACCESS, 2)]),
        (lines("import os", "def lambda_handler(event, context):",
               "    os.environ['PASSWORD']"), [(Rule.UNKNOWN_SECRET, 3)]),
        # imports
        (lines("import pandas", HANDLER), [(Rule.DISALLOWED_IMPORT, 1)]),
        (lines("import subprocess", HANDLER), [(Rule.DISALLOWED_IMPORT, 1)]),
        (lines("from importlib import import_module", HANDLER), [(Rule.DISALLOWED_IMPORT, 1)]),
        (lines("from . import helpers", HANDLER), [(Rule.DISALLOWED_IMPORT, 1)]),
        (lines("import docrelay", HANDLER), [(Rule.DISALLOWED_IMPORT, 1)]),
        (lines("from docrelay import kube", HANDLER), [(Rule.DISALLOWED_IMPORT, 1)]),
        (lines("def lambda_handler(event, context):", "    __import__('pandas')"),
         [(Rule.DISALLOWED_IMPORT, 2)]),
        # several problems at once, ordered by line
        (lines("import boto3", "import os", "def lambda_handler(event):",
               "    print(os.environ['API_KEY'])"),
         [(Rule.HANDLER_SIGNATURE, 3), (Rule.DISALLOWED_IMPORT, 1), (Rule.SECRET_OUTPUT, 4)]),
    ],
)  # fmt: skip
def test_invalid_code(source: str, expected: list[tuple[Rule, int | None]]) -> None:
    problems = check_generated_code(source, secret_names=["API_KEY"])
    assert sorted((p.rule, p.line) for p in problems) == sorted(expected)


def test_messages_say_what_and_where() -> None:
    source = lines("import os", "def lambda_handler(event, context):",
                   "    print(os.environ['API_KEY'])")  # fmt: skip
    [problem] = check_generated_code(source)
    assert problem.describe() == PRINTS_KEY

    [problem] = check_generated_code(lines("import pandas", HANDLER))
    assert problem.describe() == (
        "line 1: import of 'pandas': the runtime offers only the standard library and "
        "docrelay.sdk, httpx, pydantic, requests"
    )

    [problem] = check_generated_code("def f(:\n", secret_names=[])
    assert problem == Problem(Rule.SYNTAX_ERROR, "invalid syntax", 1)

    [problem] = check_generated_code(
        lines("import os", "def lambda_handler(event, context):", "    os.getenv('TOKEN')"),
        secret_names=["API_KEY", "LEDGER_CODE"],
    )
    assert problem.describe() == (
        "line 3: reads 'TOKEN', which is not one of the integration's secrets "
        "(API_KEY, LEDGER_CODE)"
    )


def test_unknown_secrets_are_only_checked_when_the_names_are_known() -> None:
    source = lines("import os", "def lambda_handler(event, context):", "    os.getenv('TOKEN')")
    assert check_generated_code(source) == []


def test_the_import_policy_follows_the_run_image() -> None:
    source = lines("import pandas", HANDLER)
    policy = ImportPolicy(packages=frozenset({"docrelay.sdk", "pandas"}))
    assert check_generated_code(source, policy=policy) == []
    assert check_generated_code(lines("import httpx", HANDLER), policy=policy) != []
