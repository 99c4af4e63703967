// What a Node.js integration imports: the platform's helper names, served through the run
// broker, as docrelay.sdk offers them to Python (docs/runner.md, "The SDK").
//
//   import { getDocument } from "@docrelay/sdk";      // or: const sdk = require("@docrelay/sdk")
//   export async function handler(event) {
//     const document = await getDocument(event.document_identifier);
//   }
//
// Every call goes to the broker (DOCRELAY_BROKER_URL) with the pod's projected token; the
// broker fetches from the platform and calls connected apps through Pipedream Connect, with
// credentials this process never sees. Node.js standard library only. Timeouts: connect 5 s,
// read 30 s (45 s for apiRequest and uploadFile, 150 s for executeAction). Failures throw
// typed errors the runner classifies (429/5xx and no answer: retryable; other 4xx: the code's).
//
// Dry runs (event.dry_run is true; the agent's automatic test runs are dry): nothing that could
// change a downstream system is sent. executeAction, uploadFile and an apiRequest with a
// writing method (POST, PUT, PATCH, DELETE) resolve as if they succeeded, with dry_run: true in
// the answer and a simulated body ({dryRun: true, simulated: "... not sent"}); reads are real.
// Direct fetch/http: plain-HTTP writes get a simulated 200 (header X-Docrelay-Dry-Run), an
// HTTPS connection is not opened (the run ends EgressDenied, "dry run: ... needs a live test").
// uploadFile's URL is then under https://dry-run.docrelay.invalid/ (docs/runner.md, "Dry runs").
"use strict";

const broker = require("../broker.cjs");

const PROXY_READ_TIMEOUT_MS = 45000; // Pipedream gives the target 30 s, then answers 504
const ACTION_READ_TIMEOUT_MS = 150000; // the broker waits up to 120 s for an action

/** A helper call failed. `statusCode` is the broker's answer (null: no answer). */
class SdkError extends Error {
  constructor(message, statusCode = null) {
    super(message);
    this.name = new.target.name;
    this.statusCode = statusCode;
  }
}

/** No answer, or 429/5xx: worth retrying (the runner reports a TransientError). */
class BrokerUnavailable extends SdkError {}
BrokerUnavailable.prototype.retryable = true;

/** 429: Pipedream's limit or the project's budget. Retryable; `retryAfter` seconds. */
class RateLimited extends BrokerUnavailable {
  constructor(message, statusCode = 429, retryAfter = null) {
    super(message, statusCode);
    this.retryAfter = retryAfter;
  }
}

/** 504: the target did not answer within Pipedream's 30 s. Retryable. */
class UpstreamTimeout extends BrokerUnavailable {}

/** The broker refused: not this run's document, an account the Integration does not list. */
class Forbidden extends SdkError {}
Forbidden.prototype.retryable = false;

class DocumentNotFound extends SdkError {}
DocumentNotFound.prototype.retryable = false;

/** 404: no such action (or account) at Pipedream. */
class NotFound extends SdkError {}
NotFound.prototype.retryable = false;

/** The Pipedream action ran and reported an error. */
class ActionFailed extends SdkError {}
ActionFailed.prototype.retryable = false;

/** The target answered non-2xx through the proxy: `statusCode` is the target's, `response`
 * the whole answer `{success: false, data, status_code, headers}`. */
class ApiRequestError extends SdkError {
  constructor(message, statusCode, response) {
    super(message, statusCode);
    this.response = response;
    this.retryable = statusCode !== null && (statusCode === 429 || statusCode >= 500);
  }
}

async function call(method, path) {
  try {
    return await broker.request(method, path);
  } catch (error) {
    if (!(error instanceof broker.BrokerError)) throw error;
    const status = error.statusCode;
    if (status === null || status === 429 || status >= 500) throw new BrokerUnavailable(error.message, status);
    if (status === 404) throw new DocumentNotFound(error.message, status);
    if (status === 401 || status === 403) throw new Forbidden(error.message, status);
    throw new SdkError(error.message, status);
  }
}

async function callAccount(path, body, readTimeoutMs) {
  try {
    return await broker.request("POST", path, body, readTimeoutMs);
  } catch (error) {
    if (!(error instanceof broker.BrokerError)) throw error;
    const status = error.statusCode;
    if (status === 429) throw new RateLimited(error.message, status, error.retryAfter);
    if (status === 504) throw new UpstreamTimeout(error.message, status);
    if (status === null || status >= 500) throw new BrokerUnavailable(error.message, status);
    if (status === 401 || status === 403) throw new Forbidden(error.message, status);
    if (status === 404) throw new NotFound(error.message, status);
    if (status === 422) throw new ActionFailed(error.message, status);
    throw new SdkError(error.message, status);
  }
}

function segment(identifier) {
  if (typeof identifier !== "string" || !identifier) {
    throw new TypeError("a document identifier is a non-empty string");
  }
  return encodeURIComponent(identifier);
}

function accountPath(accountId, what) {
  if (typeof accountId !== "string" || !accountId) {
    throw new TypeError("accountId is a ConnectedAccount name or its apn_ id");
  }
  return `/v1/broker/accounts/${encodeURIComponent(accountId)}/${what}`;
}

const base64 = (value) => Buffer.from(value).toString("base64");
const isBytes = (value) => value instanceof Uint8Array || value instanceof ArrayBuffer;

/** The document, as the platform returns it: `{data, meta, error, warnings}`. */
async function getDocument(identifier) {
  return { ...(await call("GET", `/v1/broker/documents/${segment(identifier)}`)) };
}

async function getValidationResults(identifier) {
  const answer = await call("GET", `/v1/broker/documents/${segment(identifier)}/validation-results`);
  return [...((answer && answer.results) || [])];
}

async function getDocumentPortalUrl(identifier) {
  const answer = await call("GET", `/v1/broker/documents/${segment(identifier)}/portal-url`);
  return answer && answer.url ? String(answer.url) : null;
}

function filePart(field, value) {
  let filename = field;
  let contentType = "application/octet-stream";
  let content = value;
  if (Array.isArray(value)) [filename, content, contentType = contentType] = value;
  else if (value && typeof value === "object" && !isBytes(value) && "content" in value) {
    ({ filename = field, content, contentType = contentType } = value);
  }
  if (typeof content !== "string" && !isBytes(content)) {
    throw new TypeError("a file's content must be a string, a Buffer or a Uint8Array");
  }
  return { field, filename: String(filename), contentType: String(contentType), contentBase64: base64(content) };
}

/** Call `url` as the connected account, through the broker and Pipedream's proxy (which adds
 * the account's credentials). Resolves to `{success, data, status_code, headers}`; throws
 * ApiRequestError when the target answers non-2xx. */
async function apiRequest(accountId, url, options = {}) {
  const { method = "POST", body, headers, params, files, data } = options;
  const request = { url, method: String(method).toUpperCase() };
  if (headers) request.headers = Object.fromEntries(Object.entries(headers).map(([k, v]) => [String(k), String(v)]));
  if (params) request.params = params;
  if (isBytes(body)) request.bodyBase64 = base64(body);
  else if (typeof body === "string") request.text = body;
  else if (body !== undefined && body !== null) request.json = body;
  if (data !== undefined && data !== null) request.data = data;
  if (files) {
    const items = Array.isArray(files) ? files : Object.entries(files);
    request.files = items.map(([field, value]) => filePart(String(field), value));
  }
  const answer = { ...((await callAccount(accountPath(accountId, "request"), request, PROXY_READ_TIMEOUT_MS)) || {}) };
  if (!answer.success) {
    const status = Number.isInteger(answer.status_code) ? answer.status_code : null;
    const where = (() => {
      try {
        const parsed = new URL(url);
        return `${parsed.protocol}//${parsed.host}${parsed.pathname}`;
      } catch {
        return "the URL";
      }
    })();
    throw new ApiRequestError(`apiRequest ${request.method} ${where}: the target answered ${status}`, status, answer);
  }
  return answer;
}

/** Run a Pipedream action as the account; the action's return value is `.result.ret`. */
async function executeAction(accountId, toolName, toolParams = {}) {
  const body = { toolName, toolParams: { ...(toolParams || {}) } };
  return { ...(await callAccount(accountPath(accountId, "actions"), body, ACTION_READ_TIMEOUT_MS)) };
}

/** Store a file for this run; resolves to a signed, expiring URL the account's app or an
 * action can fetch. At most 700 KiB. */
async function uploadFile(accountId, content, fileName, contentType) {
  const body = { fileName, contentType, contentBase64: base64(content) };
  const answer = await callAccount(accountPath(accountId, "files"), body, PROXY_READ_TIMEOUT_MS);
  return String((answer || {}).url);
}

module.exports = {
  ActionFailed,
  ApiRequestError,
  BrokerUnavailable,
  DocumentNotFound,
  Forbidden,
  NotFound,
  RateLimited,
  SdkError,
  UpstreamTimeout,
  apiRequest,
  executeAction,
  getDocument,
  getDocumentPortalUrl,
  getValidationResults,
  uploadFile,
};
