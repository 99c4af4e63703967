// The Node.js runner: the one process of every run Job of a `spec.runtime.nodejs` Integration
// (`node /opt/docrelay/node/runner.mjs`). The same contract as `python -m docrelay.runner`
// (docs/runner.md): the run's key from the broker, values decrypted into process.env, every
// form of every value masked in everything printed, `handler(event, context)` called once
// under the deadline, the outcome in the termination message and the exit code.
// Node.js standard library only.
//
// The code runs in a worker thread; this main thread keeps the deadline (an endless loop in
// the code cannot stop its timer) and masks all the code prints on its way out.

import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { StringDecoder } from "node:string_decoder";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";

import broker from "./broker.cjs";
import { describe, exitCode, outcomeJson } from "./contract.mjs";
import { Masker } from "./masking.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_TIMEOUT_SECONDS = 300;
const CODE_PATH = "/var/run/docrelay/code/handler.js";
const TERMINATION_PATH = "/dev/termination-log";
const PROXY_VARIABLES = ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"];
const EGRESS_WAIT_SECONDS = 10; // contract.EGRESS_WAIT_SECONDS
const WAIT_INTERVAL_SECONDS = 0.1;
const SDK_NAME = "@docrelay/sdk";
const env = process.env;

// --- output: everything printed goes through here, masked once secrets are open ----------------

let masker = null;
const outputs = {};

function output(which) {
  if (!outputs[which]) {
    const target = which === "stdout" ? process.stdout : process.stderr;
    outputs[which] = { target, decoder: new StringDecoder("utf8"), stream: masker ? masker.stream() : null };
  }
  return outputs[which];
}

function write(which, data) {
  const out = output(which);
  const text = typeof data === "string" ? data : out.decoder.write(data);
  const masked = out.stream ? out.stream.feedLines(text) : text;
  if (masked) out.target.write(masked);
}

function flushOutputs() {
  for (const out of Object.values(outputs)) {
    const rest = out.decoder.end();
    const masked = out.stream ? out.stream.feedLines(rest) + out.stream.flush() : rest;
    if (masked) out.target.write(masked);
  }
}

function say(text) {
  write("stderr", `docrelay runner: ${text}\n`);
}

// --- the outcome ------------------------------------------------------------------------------

let finished = false;

function failed(errorClass, exceptionType, message) {
  return { status: "Failed", errorClass, exceptionType, message };
}

function finish(outcome) {
  if (finished) return;
  finished = true;
  if (masker) {
    for (const field of ["message", "resultSummary", "tracebackTail"]) {
      if (outcome[field]) outcome[field] = masker.mask(outcome[field]);
    }
  }
  flushOutputs();
  try {
    fs.writeFileSync(env.DOCRELAY_TERMINATION_MESSAGE_PATH || TERMINATION_PATH, outcomeJson(outcome));
  } catch (error) {
    // The exit code still tells the operator what happened.
    process.stderr.write(`docrelay runner: cannot write the termination message: ${error.code || error.name}\n`);
  }
  process.exit(exitCode(outcome));
}

class Problem extends Error {
  constructor(message, errorClass, kind) {
    super(message);
    this.errorClass = errorClass;
    this.kind = kind;
  }
}

// --- secrets: the one-run key from the broker, then each sealed variable --------------------------

function decryptValue(key, runUid, attempt, name, text) {
  if (!text.startsWith("v1.")) throw new Problem(`${name}: not a per-run sealed value`, "ConfigurationError", "SecretsError");
  try {
    const raw = Buffer.from(text.slice(3), "base64url");
    const decipher = crypto.createDecipheriv("aes-256-gcm", key, raw.subarray(0, 12));
    decipher.setAAD(Buffer.from(`docrelay.io/run-env/v1/${runUid}/${attempt}/${name}`));
    decipher.setAuthTag(raw.subarray(raw.length - 16));
    return Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]);
  } catch {
    throw new Problem(`${name}: does not open for this run and attempt`, "ConfigurationError", "SecretsError");
  }
}

async function openSecrets(attempt) {
  const names = (env.DOCRELAY_SEALED_KEYS || "").split(",").map((n) => n.trim()).filter(Boolean);
  if (!names.length) return [];
  if (!env.DOCRELAY_BROKER_URL) {
    say("no broker configured; sealed variables stay encrypted");
    return [];
  }
  let answer;
  try {
    answer = await broker.request("POST", "/v1/broker/key");
  } catch (error) {
    const status = error.statusCode ?? null;
    const retryable = status === null || status === 429 || status >= 500;
    throw new Problem(
      `the broker did not release the run's key: ${error.message}`,
      retryable ? "TransientError" : "ConfigurationError",
      "BrokerError",
    );
  }
  let key, runUid, releasedFor;
  try {
    key = Buffer.from(String(answer.key), "base64url");
    runUid = String(answer.runUid ?? "");
    releasedFor = Number(answer.attempt);
    if (!runUid || !answer.key || !Number.isInteger(releasedFor)) throw new Error();
  } catch {
    throw new Problem("the broker's key answer is malformed", "ConfigurationError", "BrokerError");
  }
  if (releasedFor !== attempt || key.length !== 32) {
    throw new Problem("the broker released a key for another attempt", "ConfigurationError", "BrokerError");
  }
  const values = [];
  try {
    for (const name of names) {
      const sealed = env[name];
      if (sealed === undefined) {
        throw new Problem(`the secret ${name} is missing from the run`, "ConfigurationError", "SecretsError");
      }
      const value = decryptValue(key, runUid, attempt, name, sealed).toString("utf8");
      env[name] = value;
      values.push(value);
    }
  } finally {
    key.fill(0); // needed no longer; the values live in process.env only
  }
  return values;
}

/** The broker token as the egress proxy's password in the proxy variables (the token, to mask). */
function installProxyCredentials() {
  const names = PROXY_VARIABLES.filter((name) => env[name]);
  if (!names.length) return null;
  let token = "";
  try {
    token = broker.readToken();
  } catch {
    token = "";
  }
  if (!token) {
    say("no broker token mounted; the egress proxy will refuse calls");
    return null;
  }
  for (const name of names) {
    try {
      const url = new URL(env[name].includes("://") ? env[name].trim() : `http://${env[name].trim()}`);
      if (!["http:", "https:"].includes(url.protocol) || url.username || url.password) continue;
      env[name] = `${url.protocol}//run:${encodeURIComponent(token)}@${url.host}`;
    } catch {
      // not a URL we can add credentials to
    }
  }
  return token;
}

/** `host:port` of the egress proxy if it does not answer now (docrelay/runner/egress.py's
 * proxy_unreachable): an answer is needed, not just a connection, as a relay in front of it may
 * accept and then close. */
function proxyUnreachable(timeoutMs = 2000) {
  const raw = PROXY_VARIABLES.map((name) => env[name]).find(Boolean);
  if (!raw) return Promise.resolve(null);
  let url;
  try {
    url = new URL(raw.includes("://") ? raw : `http://${raw}`);
  } catch {
    return Promise.resolve(null);
  }
  const where = `${url.hostname}:${url.port || 80}`; // an IPv6 host in brackets, as in the URL
  const host = url.hostname.replace(/^\[|\]$/g, ""); // net.connect wants it without them
  return new Promise((resolve) => {
    const socket = net.connect({ host, port: Number(url.port || 80) });
    const done = (answered) => {
      socket.destroy();
      resolve(answered ? null : where);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.once("close", () => done(false)); // accepted, then closed without an answer
    socket.once("connect", () => socket.write("GET http://docrelay-probe.invalid/ HTTP/1.1\r\n\r\n"));
    socket.once("data", (chunk) => done(chunk.toString("latin1").startsWith("HTTP/1.")));
  });
}

/** Before the code: probe the egress proxy until it answers, at most DOCRELAY_EGRESS_WAIT_SECONDS
 * (10 s by default, at most half the deadline; docrelay/runner/egress.py's wait_for_proxy). A new
 * pod's network can lag its container (a NetworkPolicy controller that programs a pod once its
 * address is published, as kube-router and k3s do): code calling out in its first second would
 * fail on every attempt. The code runs either way; the run's log says when it waited. */
async function waitForProxy(timeoutSeconds) {
  if (!PROXY_VARIABLES.some((name) => env[name])) return;
  const asked = Number(env.DOCRELAY_EGRESS_WAIT_SECONDS ?? EGRESS_WAIT_SECONDS);
  const bound = Math.max(0, Math.min(Number.isFinite(asked) ? asked : EGRESS_WAIT_SECONDS, timeoutSeconds / 2));
  if (bound <= 0) return;
  const started = Date.now();
  let probes = 0;
  for (;;) {
    const left = bound - (Date.now() - started) / 1000;
    probes += 1;
    const away = await proxyUnreachable(Math.max(50, Math.min(1000, left * 1000)));
    if (away === null) {
      if (probes > 1) {
        const waited = secondsText((Date.now() - started) / 1000);
        say(`the egress proxy answered after ${waited} (this pod's network was not ready when it started)`);
      }
      return;
    }
    if ((Date.now() - started) / 1000 + WAIT_INTERVAL_SECONDS >= bound) {
      say(`the egress proxy at ${away} did not answer within ${secondsText(bound)}; running the code anyway`);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, WAIT_INTERVAL_SECONDS * 1000));
  }
}

/** A network failure while the egress proxy itself is away (restarting): say so. */
async function withProxyHint(outcome) {
  if (outcome.errorClass !== "TransientError" || !PROXY_VARIABLES.some((name) => env[name])) {
    return outcome;
  }
  const where = await proxyUnreachable();
  if (!where) return outcome;
  return { ...outcome, message: `${outcome.message} (the egress proxy at ${where} is not reachable; retried)` };
}

// --- the code -------------------------------------------------------------------------------------

const ESM_SYNTAX = /^\s*(?:export\s|import\s*(?:[\w*{]|["'])|import\.meta\b)|\bawait\s+import\s*\(/m;

/** The code as a file the worker can load: ES module or CommonJS, told apart by its syntax,
 * next to a node_modules that offers the SDK as "@docrelay/sdk". */
function prepareCode(source) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "docrelay-code-"));
  const esm = ESM_SYNTAX.test(source);
  const file = path.join(dir, esm ? "handler.mjs" : "handler.cjs");
  fs.writeFileSync(file, source, { mode: 0o400 });
  const sdk = path.join(HERE, "sdk");
  if (fs.existsSync(sdk)) {
    fs.mkdirSync(path.join(dir, "node_modules", "@docrelay"), { recursive: true });
    fs.symlinkSync(sdk, path.join(dir, "node_modules", SDK_NAME));
  }
  return { file, esm };
}

/** The code's heap: three quarters of the container's memory limit (the rest is the runner,
 * Node itself, buffers), so a growing JavaScript heap ends as OutOfMemory, with a message,
 * before the kernel's OOM kill. No limit known: Node's default. */
function heapLimits() {
  const mib = Number(env.DOCRELAY_MEMORY_LIMIT_MIB);
  if (!Number.isFinite(mib) || mib < 64) return {};
  return { maxOldGenerationSizeMb: Math.floor(mib * 0.75) };
}

function secondsText(seconds) {
  return seconds >= 1 ? `${Math.round(seconds)} s` : `${Math.max(seconds, 0).toFixed(1)} s`;
}

async function main() {
  const started = Date.now();
  const timeout = Number(env.DOCRELAY_TIMEOUT_SECONDS ?? DEFAULT_TIMEOUT_SECONDS);
  const attempt = Number(env.DOCRELAY_ATTEMPT ?? "1");
  let event;
  try {
    event = JSON.parse(env.DOCRELAY_EVENT ?? "{}");
  } catch {
    event = undefined;
  }
  if (!Number.isFinite(timeout) || !Number.isInteger(attempt) || event === undefined) {
    return finish(failed("ConfigurationError", null, "the run's settings are not valid"));
  }
  const deadline = started + timeout * 1000;
  const timer = setTimeout(
    () => finish(failed("Timeout", "TimeoutError", `the code did not finish within ${secondsText(timeout)} (timeoutSeconds)`)),
    Math.max(0, deadline - Date.now()),
  );
  // The egress proxy answering first: the broker (secrets) is in the same gateway pods.
  await waitForProxy(timeout);
  const masked = [];
  try {
    masked.push(...(await openSecrets(attempt)));
  } catch (error) {
    if (!(error instanceof Problem)) throw error;
    return finish(failed(error.errorClass, error.kind, error.message));
  }
  const token = installProxyCredentials();
  if (token) masked.push(token);
  if (masked.length) masker = new Masker(masked);

  const codePath = env.DOCRELAY_CODE_PATH || CODE_PATH;
  let source;
  try {
    source = fs.readFileSync(codePath);
  } catch {
    return finish(failed("ConfigurationError", "ConfigurationError", `the code file ${path.basename(codePath)} cannot be read`));
  }
  const digest = `sha256:${crypto.createHash("sha256").update(source).digest("hex")}`;
  if (env.DOCRELAY_CODE_HASH && digest !== env.DOCRELAY_CODE_HASH) {
    return finish(failed("ConfigurationError", "ConfigurationError", "the mounted code does not match the revision's codeHash"));
  }
  const code = prepareCode(source.toString("utf8"));
  const run = env.DOCRELAY_RUN || "run";
  const sentinel = `\u0000docrelay-end-${crypto.randomBytes(16).toString("hex")}\u0000`;
  const worker = new Worker(new URL("./worker.mjs", import.meta.url), {
    workerData: {
      codeFile: code.file,
      esm: code.esm,
      event,
      run,
      attempt,
      deadline,
      egress: PROXY_VARIABLES.some((name) => env[name]),
      sentinel,
    },
    stdout: true,
    stderr: true,
    resourceLimits: heapLimits(),
  });
  // What the code printed arrives on the worker's streams, its outcome as a message: finish
  // once both streams have delivered the sentinel the worker writes after its outcome (or
  // ended), so nothing printed is lost.
  const open = new Set(["stdout", "stderr"]);
  let pending = null;
  const settle = () => {
    if (pending && open.size === 0) {
      clearTimeout(timer);
      finish(pending);
    }
  };
  for (const which of ["stdout", "stderr"]) {
    worker[which].on("data", (chunk) => {
      const text = chunk.toString("latin1");
      if (text.endsWith(sentinel)) {
        if (text.length > sentinel.length) write(which, chunk.subarray(0, chunk.length - sentinel.length));
        open.delete(which);
        return settle();
      }
      write(which, chunk);
    });
    worker[which].on("end", () => {
      open.delete(which);
      settle();
    });
  }
  // Once the outcome is known the code is done (as on Lambda); its thread ends with the process.
  const conclude = (outcome) => {
    if (pending) return;
    pending = outcome;
    setTimeout(() => {
      open.clear(); // the code replaced process.stdout: do not wait for the sentinel forever
      settle();
    }, 2000).unref();
    settle();
  };
  let reported = false; // the worker sent its outcome: its thread's end says nothing more
  worker.on("message", (message) => {
    if (message?.kind !== "outcome" || reported) return;
    reported = true;
    withProxyHint(message.outcome).then(conclude, () => conclude(message.outcome));
  });
  worker.on("error", (error) => {
    if (reported) return;
    if (error?.code === "ERR_WORKER_OUT_OF_MEMORY") {
      return conclude(failed("OutOfMemory", "RangeError", "the code ran out of memory (JavaScript heap)"));
    }
    const [kind, text] = describe(error);
    conclude(failed("CodeError", kind, `uncaught in the code: ${text}`));
  });
  worker.on("exit", (code) => {
    if (reported) return;
    conclude(
      failed(
        "CodeError",
        "Error",
        code === 0
          ? "the code ended without its handler settling (a promise that never resolves?)"
          : `the code called process.exit(${code})`,
      ),
    );
  });
}

main().catch((error) => {
  const [kind] = describe(error);
  finish(failed("ConfigurationError", kind, `the runner failed: ${kind}`));
});
