"""What the built images do in real containers, hardened as a run Job's pod is.

Every run here has what builders/run.py asks of a run's container: a read-only root, uid and
gid 65532, no capabilities, no new privileges, and no network at all; /tmp is a tmpfs (the
Job's emptyDir). The integration code reaches the container as the Job mounts it (read-only at
/var/run/docrelay/code) and the runner's outcome comes back through the termination message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit import engine, images
from tests.images.conftest import image

HARDENED = (
    "--read-only", "--user", "65532:65532", "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges", "--network", "none",
    "--tmpfs", "/tmp:rw,nosuid,nodev,size=16m",
)

PYTHONS = images.runner_pythons()

PYTHON_HANDLER = textwrap.dedent('''
    import json, os, sys

    def lambda_handler(event, context):
        try:
            open("/opt/planted", "w")
            root = "writable"
        except OSError as exc:
            root = type(exc).__name__ + ":" + str(exc.errno)
        lines = open("/proc/self/status").read().splitlines()
        status = dict(line.split(":\\t", 1) for line in lines if ":\\t" in line)
        print("exporting", event["document_identifier"])
        return {"summary": json.dumps({
            "document": event["document_identifier"],
            "uid": os.getuid(), "gid": os.getgid(), "root": root,
            "capEff": status["CapEff"].strip(), "noNewPrivs": status["NoNewPrivs"].strip(),
            "python": "%d.%d" % sys.version_info[:2],
        })}
''')

NODE_HANDLER = textwrap.dedent('''
    const fs = require("node:fs");
    exports.handler = async (event, context) => {
      let root = "writable";
      try { fs.writeFileSync("/opt/planted", "x"); } catch (err) { root = err.code; }
      const status = fs.readFileSync("/proc/self/status", "utf8");
      const field = (name) => status.match(new RegExp(`^${name}:\\\\s+(\\\\S+)`, "m"))[1];
      console.log("exporting", event.document_identifier);
      return { summary: JSON.stringify({
        document: event.document_identifier, uid: process.getuid(), gid: process.getgid(),
        root, capEff: field("CapEff"), noNewPrivs: field("NoNewPrivs"),
        node: process.versions.node,
      }) };
    };
''')


@pytest.fixture
def run_dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    code, out = tmp_path / "code", tmp_path / "out"
    code.mkdir()
    out.mkdir()
    out.chmod(0o777)  # the container writes its termination message here as uid 65532
    yield code, out


def hardened(
    ref: str,
    *args: str,
    entrypoint: str | None = None,
    options: tuple[str, ...] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """`docker run` of `ref` as a run's container is hardened (HARDENED, then `options`),
    with `args` for its entrypoint (the image's, or `entrypoint`); output captured."""
    chosen = ("--entrypoint", entrypoint) if entrypoint else ()
    return engine.docker(
        "run", "--rm", *HARDENED, *options, *chosen, ref, *args, check=check, capture=True
    )


def run_hardened(ref: str, code: Path, out: Path) -> subprocess.CompletedProcess[bytes]:
    """The runner in `ref` as its Job runs it: the code mounted read-only, one event, the
    termination message written to `out`."""
    event = json.dumps({"document_identifier": "doc-42", "event_type": "document.parse.completed"})
    return hardened(ref, check=False, options=(
        "-v", f"{code}:/var/run/docrelay/code:ro", "-v", f"{out}:/out",
        "-e", f"DOCRELAY_EVENT={event}", "-e", "DOCRELAY_TIMEOUT_SECONDS=30",
        "-e", "DOCRELAY_TERMINATION_MESSAGE_PATH=/out/termination-log",
    ))  # fmt: skip


def assert_no_npm(ref: str) -> None:
    for tool in ("npm", "npx", "corepack"):
        which = hardened(ref, "-c", f"command -v {tool}", entrypoint="sh", check=False)
        assert which.returncode != 0, f"{tool} is in {ref}"


def outcome(out: Path) -> dict[str, object]:
    message = json.loads((out / "termination-log").read_text())
    assert isinstance(message, dict)
    return message


def succeeded(ref: str, run_dirs: tuple[Path, Path], file: str, handler: str) -> dict[str, Any]:
    """`handler` run as the integration's code (`file`) by the runner in `ref`, hardened: it
    printed its line and succeeded; what it reported having seen."""
    code, out = run_dirs
    (code / file).write_text(handler)
    done = run_hardened(ref, code, out)
    assert done.returncode == 0, done.stderr.decode()
    assert "exporting doc-42" in done.stdout.decode()
    message = outcome(out)
    assert message["status"] == "Succeeded", message
    seen = json.loads(str(message["resultSummary"]))
    assert isinstance(seen, dict)
    return seen


def test_the_engine_keeps_its_bridge_and_addresses_inside_its_private_namespace(
    docker_host: str,
) -> None:
    if os.environ.get("DOCKER_HOST") and os.environ["DOCKER_HOST"] != engine.docker_host():
        pytest.skip("DOCKER_HOST names another engine; this checks devkit.engine's namespace")
    here = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    inside = subprocess.run([*engine.nsenter_prefix(), "ip", "-o", "addr"],
                            capture_output=True, text=True, check=True).stdout
    assert "docker0" in inside and "172.17." in inside
    assert "docker0" not in here
    # The engine's mounts (overlay2 layers, /run) are in its own mount namespace only.
    data_root = str(engine.state_dir() / "docker")
    assert data_root not in Path("/proc/self/mountinfo").read_text()


@pytest.mark.parametrize("python", PYTHONS)
def test_the_python_runner_runs_an_integration_read_only_as_65532_without_capabilities(
    built: images.Result, run_dirs: tuple[Path, Path], python: str,
) -> None:
    seen = succeeded(image(built, f"runner-{python}"), run_dirs, "handler.py", PYTHON_HANDLER)
    assert seen == {
        "document": "doc-42", "uid": 65532, "gid": 65532,
        "root": "OSError:30",  # EROFS: the root file system is read-only
        "capEff": "0000000000000000", "noNewPrivs": "1", "python": python,
    }


def test_the_python_runner_reports_a_failing_integration_as_a_code_error(
    built: images.Result, run_dirs: tuple[Path, Path],
) -> None:
    ref = image(built, "runner-3.11")
    code, out = run_dirs
    (code / "handler.py").write_text("def lambda_handler(event, context):\n    1 / 0\n")
    done = run_hardened(ref, code, out)
    assert done.returncode == 1  # contract.EXIT_CODE_ERROR
    message = outcome(out)
    assert (message["status"], message["errorClass"], message["exceptionType"]) == (
        "Failed", "CodeError", "ZeroDivisionError")


@pytest.mark.parametrize("name", [*(f"runner-{p}" for p in PYTHONS), "operator"])
def test_no_pip_and_no_way_to_get_it_in_the_image(built: images.Result, name: str) -> None:
    ref = image(built, name)
    for module in ("pip", "ensurepip"):
        done = hardened(ref, "-m", module, "--version", entrypoint="python", check=False)
        assert done.returncode == 1
        assert f"No module named {module}" in done.stderr.decode()


@pytest.mark.parametrize("python", PYTHONS)
def test_the_runner_image_holds_no_operator_dependencies(
    built: images.Result, python: str
) -> None:
    ref = image(built, f"runner-{python}")
    probe = ("import importlib.util as u; "
             "print([m for m in ('kopf', 'kubernetes', 'docrelay.handlers', 'cryptography', "
             "'pydantic', 'httpx', 'docrelay.sdk') if u.find_spec(m) is not None])")
    done = hardened(ref, "-c", probe, entrypoint="python")
    assert done.stdout.decode().strip() == "['cryptography', 'pydantic', 'httpx', 'docrelay.sdk']"


def test_the_operator_image_answers_help_and_imports_kopf_as_65532(
    built: images.Result,
) -> None:
    ref = image(built, "operator")
    done = hardened(ref, "--help")
    text = done.stdout.decode()
    assert "operator" in text and "gateway" in text
    probe = "import os, kopf, kubernetes, docrelay.handlers; print(os.getuid(), kopf.__name__)"
    done = hardened(ref, "-c", probe, entrypoint="python")
    assert done.stdout.decode().split() == ["65532", "kopf"]
    user = engine.docker_out("image", "inspect", "--format", "{{.Config.User}}", ref)
    assert user == "65532:65532"  # the chart's runAsNonRoot needs a numeric user


# What the agent does with JavaScript a model wrote (handlers/agent.py, handlers/conversation.py):
# check_generated_code(..., language="nodejs", syntax_check=node_syntax_check), run here inside
# the operator image. Each case: [rule, message, line] of every problem found.
AGENT_JS_CHECK = textwrap.dedent('''
    import json, logging, shutil, sys
    from docrelay.agent.codecheck import check_generated_code
    from docrelay.agent.nodecheck import node_syntax_check
    logging.basicConfig(stream=sys.stderr)
    cases = {
        "esm_broken": "export async function handler(event, context) {\\n"
                      "  return { summary: event.document_identifier ;\\n}\\n",
        "cjs_broken": "exports.handler = async (event) => {\\n  const total = ;\\n};\\n",
        "esm_valid": "export async function handler(event, context) {\\n"
                     "  return { summary: String(event.document_identifier) };\\n}\\n",
        "cjs_valid": "exports.handler = async (event) => ({ summary: `${event.event_type}` });\\n",
    }
    seen = {name: [[p.rule.value, p.message, p.line] for p in check_generated_code(
        source, secret_names=(), language="nodejs", syntax_check=node_syntax_check)]
        for name, source in cases.items()}
    print(json.dumps({"node": shutil.which("node"), "seen": seen}))
''')


def test_the_agent_checks_javascript_syntax_with_node_inside_the_hardened_operator_image(
    built: images.Result,
) -> None:
    from devkit.toolchain import node

    ref = image(built, "operator")
    done = hardened(ref, "-c", AGENT_JS_CHECK, entrypoint="python", check=False)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "no node on PATH" not in stderr  # the check ran; it was not skipped
    result = json.loads(done.stdout.decode())
    assert result["node"] == "/usr/local/bin/node"
    seen = result["seen"]
    # A syntax error is refused with node's message and its line, as the model is told.
    assert [(rule, line) for rule, _, line in seen["esm_broken"]] == [("SyntaxError", 2)]
    assert [(rule, line) for rule, _, line in seen["cjs_broken"]] == [("SyntaxError", 2)]
    assert "Unexpected token" in seen["cjs_broken"][0][1]
    assert seen["esm_valid"] == [] and seen["cjs_valid"] == []
    # The official binary of the newest pinned line, and nothing of npm beside it.
    version = hardened(ref, "--version", entrypoint="node").stdout.decode().strip()
    assert version == "v" + node.pin(images.operator_node()).version
    assert_no_npm(ref)


@pytest.mark.parametrize("major", ["20", "22", "24", "26"])
def test_the_node_runner_runs_an_integration_hardened(
    built: images.Result, run_dirs: tuple[Path, Path], major: str,
) -> None:
    ref = image(built, f"runner-node-{major}")
    seen = succeeded(ref, run_dirs, "handler.js", NODE_HANDLER)
    assert seen.pop("node").split(".")[0] == major
    assert seen == {"document": "doc-42", "uid": 65532, "gid": 65532, "root": "EROFS",
                    "capEff": "0000000000000000", "noNewPrivs": "1"}
    assert_no_npm(ref)


def test_a_second_build_is_a_cache_hit_for_every_image(built: images.Result) -> None:
    def keys() -> dict[str, str]:
        return {i.ref: i.key(images._read_record(i)["base"]) for i in images.all_images()
                if i.ref in built.built}

    images.build()  # whatever was edited since the session's build is built now
    before = keys()
    done = subprocess.run([sys.executable, "-m", "devkit.images", "build"],
                          capture_output=True, text=True, cwd=images.REPO)
    assert done.returncode == 0, done.stderr
    listed = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert set(listed) == set(built.built)
    assert all(Path(archive).is_file() for archive in listed.values())
    # An image whose inputs someone edited meanwhile (a shared checkout) may rebuild; every
    # other one is a cache hit: nothing built, nothing sent to the engine.
    after = keys()
    unchanged = [ref for ref in before if before[ref] == after[ref]]
    assert unchanged
    for ref in unchanged:
        assert f"{ref}: cached" in done.stderr
        assert f"{ref}: building" not in done.stderr
