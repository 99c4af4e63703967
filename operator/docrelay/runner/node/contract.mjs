// The Node.js runner's side of the runner contract (docs/runner.md): exit codes, error
// classes, the termination message. Mirrors docrelay/runner/contract.py; the contract tests
// (tests/unit/test_runner_contract.py) run one table against both runners.

export const EXIT_CODES = {
  Succeeded: 0,
  CodeError: 1,
  ConfigurationError: 2,
  TransientError: 3,
  OutOfMemory: 4,
  EgressDenied: 5,
  Timeout: 124,
};
const RETRYABLE = new Set(["TransientError", "Timeout", "OutOfMemory", "InfrastructureError"]);

const MESSAGE_VERSION = 1;
const MAX_TERMINATION_BYTES = 4096;
export const MAX_MESSAGE = 1500;
export const MAX_SUMMARY = 1024;
const MAX_EXCEPTION_TYPE = 256;
const MAX_TRACEBACK = 1000;

// What the egress proxy puts in a refusal's status line and header (docrelay.gateway.egress).
export const EGRESS_DENIED_PHRASE = "Egress Denied: ";
export const EGRESS_DENIED_HEADER = "x-docrelay-egress-denied";

/** The termination message: one JSON object, at most 4096 bytes of UTF-8. */
export function outcomeJson(outcome) {
  const body = { v: MESSAGE_VERSION, status: outcome.status };
  if (outcome.errorClass) {
    body.errorClass = outcome.errorClass;
    body.retryable = RETRYABLE.has(outcome.errorClass);
  }
  if (outcome.exceptionType) body.exceptionType = outcome.exceptionType.slice(0, MAX_EXCEPTION_TYPE);
  if (outcome.message) body.message = outcome.message.slice(0, MAX_MESSAGE);
  if (outcome.resultSummary) body.resultSummary = outcome.resultSummary.slice(0, MAX_SUMMARY);
  if (outcome.tracebackTail) body.tracebackTail = outcome.tracebackTail.slice(-MAX_TRACEBACK);
  let text = JSON.stringify(body);
  while (Buffer.byteLength(text) > MAX_TERMINATION_BYTES) {
    for (const field of ["tracebackTail", "message", "resultSummary"]) {
      if (field in body) body[field] = body[field].slice(0, Math.floor(body[field].length / 2));
    }
    text = JSON.stringify(body);
  }
  return text;
}

export function exitCode(outcome) {
  if (outcome.status === "Succeeded") return 0;
  return EXIT_CODES[outcome.errorClass] ?? EXIT_CODES.CodeError;
}

// --- classifying what the code threw -----------------------------------------------------

// Error codes of Node's network failures (net, dns, tls, undici).
const NETWORK_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "ETIMEDOUT", "ESOCKETTIMEDOUT", "EPIPE",
  "ENOTFOUND", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN", "EHOSTDOWN",
  "ERR_SOCKET_CONNECTION_TIMEOUT", "ERR_STREAM_PREMATURE_CLOSE", "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT", "UND_ERR_SOCKET", "UND_ERR_CLOSED",
]);
const NETWORK_NAMES = new Set(["TimeoutError", "ConnectTimeoutError", "FetchError", "BrokerUnavailable"]);

/** The error and those it wraps (cause, AggregateError's errors), breadth first, at most 16. */
function related(error) {
  const seen = [];
  const queue = [error];
  while (queue.length && seen.length < 16) {
    const item = queue.shift();
    if (item === null || typeof item !== "object" || seen.includes(item)) continue;
    seen.push(item);
    queue.push(item.cause);
    if (Array.isArray(item.errors)) queue.push(...item.errors);
  }
  return seen;
}

function headerOf(holder, name) {
  const headers = holder?.headers;
  if (!headers || typeof headers !== "object") return null;
  try {
    if (typeof headers.get === "function") return headers.get(name);
    for (const [key, value] of Object.entries(headers)) {
      if (key.toLowerCase() === name) return Array.isArray(value) ? value[0] : value;
    }
  } catch {
    return null;
  }
  return null;
}

/** The egress proxy's reason if the error (or one it wraps) is the proxy refusing. */
export function egressDenial(error) {
  const items = related(error);
  for (const item of items) {
    for (const holder of [item, item.response]) {
      const value = headerOf(holder, EGRESS_DENIED_HEADER);
      if (typeof value === "string" && value) return value.slice(0, MAX_MESSAGE);
    }
  }
  for (const item of items) {
    const text = String(item.message ?? "");
    if (text.includes(EGRESS_DENIED_PHRASE)) {
      const reason = text.split(EGRESS_DENIED_PHRASE)[1].split(/['"\n>]/)[0];
      return reason.trim().replace(/\)$/, "").trim().slice(0, MAX_MESSAGE);
    }
  }
  return null;
}

/** An HTTP status the error carries: statusCode, status, or its response's. */
export function statusCodeOf(error) {
  const candidates = [error?.statusCode, error?.status, error?.response?.status, error?.response?.statusCode];
  for (const value of candidates) {
    if (Number.isInteger(value) && value >= 100 && value <= 599) return value;
  }
  return null;
}

function isOutOfMemory(error) {
  return error instanceof RangeError && /allocation failed|out of memory/i.test(String(error.message));
}

/** The error class of what the code threw (docs/runner.md, "Error classes"). */
export function classify(error) {
  if (isOutOfMemory(error)) return "OutOfMemory";
  if (error !== null && typeof error === "object" && egressDenial(error) !== null) return "EgressDenied";
  if (typeof error?.retryable === "boolean") return error.retryable ? "TransientError" : "CodeError";
  const status = statusCodeOf(error);
  if (status !== null) return status === 429 || status >= 500 ? "TransientError" : "CodeError";
  for (const item of related(error)) {
    if (NETWORK_CODES.has(item.code) || NETWORK_NAMES.has(item.name)) return "TransientError";
  }
  return "CodeError";
}

/** [type, one-line message] of what the code threw. */
export function describe(error) {
  let kind;
  let text;
  if (error instanceof Error || (error && typeof error === "object" && "message" in error)) {
    kind = error.constructor?.name && error.constructor.name !== "Object" ? error.constructor.name : error.name || "Error";
    if (error.name && error.name !== kind && error.name !== "Error") kind = error.name;
    text = String(error.message ?? "");
  } else {
    kind = error === null ? "null" : typeof error;
    text = String(error);
  }
  text = text.split(/\s+/).filter(Boolean).join(" ");
  return [kind, text ? `${kind}: ${text}` : kind];
}

/** The innermost 5 frames of the stack, file:line in function; no source, no values. */
export function tracebackTail(error, frames = 5) {
  const stack = typeof error?.stack === "string" ? error.stack : "";
  const out = [];
  for (const line of stack.split("\n")) {
    const match = /^\s+at (?:(.+?) \()?(.+?):(\d+):\d+\)?$/.exec(line);
    if (!match) continue;
    const [, fn, file, lineNumber] = match;
    if (file.startsWith("node:") || file.includes("/docrelay/runner/node/")) continue;
    out.push(`${file.split("/").pop()}:${lineNumber} in ${fn ? fn.replace(/^async /, "") : "<module>"}`);
    if (out.length >= frames) break;
  }
  return out.join(" <- ") || null;
}

/** A short text of what the code returned: its `summary` if it gave one, else JSON. */
export function summarize(result) {
  if (result === undefined || result === null) return null;
  if (typeof result === "object" && typeof result.summary === "string") {
    return result.summary.slice(0, MAX_SUMMARY);
  }
  let text;
  try {
    text = JSON.stringify(result);
  } catch {
    text = String(result);
  }
  return (text ?? String(result)).slice(0, MAX_SUMMARY);
}
