// The run's HTTP client for the broker (docs/broker.md), for the Node.js runner and its SDK:
// Node.js standard library only, the pod's projected token read on every call (the kubelet
// rotates it), connect 5 s, then read 30 s unless told otherwise. Mirrors
// docrelay/runner/brokerclient.py. CommonJS, so the SDK can require it and ES modules import it.
"use strict";

const fs = require("node:fs");
const http = require("node:http");
const https = require("node:https");

const CONNECT_TIMEOUT_MS = 5000;
const READ_TIMEOUT_MS = 30000;
const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;
const TOKEN_PATH = "/var/run/secrets/docrelay/broker/token";

/** The broker refused or could not be reached. Never holds a token or a value. */
class BrokerError extends Error {
  constructor(message, statusCode = null, retryAfter = null) {
    super(message);
    this.name = "BrokerError";
    this.statusCode = statusCode;
    this.retryAfter = retryAfter;
    if (statusCode === null) this.retryable = true; // no answer: the network or the broker is away
  }
}

function tokenPath(env = process.env) {
  return env.DOCRELAY_BROKER_TOKEN_PATH || TOKEN_PATH;
}

function readToken(env = process.env) {
  try {
    return fs.readFileSync(tokenPath(env), "utf8").trim();
  } catch {
    throw new BrokerError("the broker token is not mounted");
  }
}

function brokerUrl(env = process.env) {
  const url = env.DOCRELAY_BROKER_URL;
  if (!url) throw new BrokerError("no broker configured for this run (DOCRELAY_BROKER_URL)");
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new BrokerError("the broker URL is not an http(s) URL");
  }
  if (!["http:", "https:"].includes(parsed.protocol)) {
    throw new BrokerError("the broker URL is not an http(s) URL");
  }
  return parsed;
}

/** The broker's JSON answer; BrokerError on a non-2xx answer or none. */
function request(method, path, body = undefined, readTimeoutMs = READ_TIMEOUT_MS, env = process.env) {
  const base = brokerUrl(env);
  const token = readToken(env);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (payload) {
    headers["Content-Type"] = "application/json";
    headers["Content-Length"] = String(payload.length);
  }
  const client = base.protocol === "https:" ? https : http;
  const where = `${method} ${path.split("?")[0]}`;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (error) => {
      if (!settled) {
        settled = true;
        reject(error);
      }
    };
    const req = client.request(
      {
        protocol: base.protocol,
        hostname: base.hostname,
        port: base.port || (base.protocol === "https:" ? 443 : 80),
        path: base.pathname.replace(/\/$/, "") + path,
        method,
        headers,
        agent: false, // the broker is reached directly, never through the egress proxy
      },
      (res) => {
        const chunks = [];
        let size = 0;
        res.on("data", (chunk) => {
          size += chunk.length;
          if (size <= MAX_RESPONSE_BYTES) chunks.push(chunk);
        });
        res.on("error", () => fail(new BrokerError(`broker unreachable (${where})`)));
        res.on("end", () => {
          if (settled) return;
          settled = true;
          clearTimeout(connectTimer);
          let answer = null;
          try {
            answer = chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : null;
          } catch {
            answer = null;
          }
          const status = res.statusCode;
          if (status >= 200 && status < 300) return resolve(answer);
          const reason = answer && typeof answer === "object" ? answer.error : null;
          const text = reason ? String(reason).slice(0, 200) : "refused";
          const retryAfter = Number.parseFloat(res.headers["retry-after"] ?? "");
          reject(
            new BrokerError(
              `${where} answered ${status}: ${text}`,
              status,
              Number.isFinite(retryAfter) ? retryAfter : null,
            ),
          );
        });
      },
    );
    const connectTimer = setTimeout(() => {
      req.destroy();
      fail(new BrokerError(`broker unreachable (connect timeout, ${where})`));
    }, CONNECT_TIMEOUT_MS);
    req.on("socket", (socket) => {
      const connected = () => {
        clearTimeout(connectTimer);
        req.setTimeout(readTimeoutMs, () => {
          req.destroy();
          fail(new BrokerError(`broker unreachable (read timeout, ${where})`));
        });
      };
      if (socket.connecting) socket.once("connect", connected);
      else connected();
    });
    req.on("error", (error) => {
      clearTimeout(connectTimer);
      fail(new BrokerError(`broker unreachable (${error.code || error.name}, ${where})`));
    });
    req.end(payload);
  });
}

module.exports = { BrokerError, request, readToken, tokenPath, CONNECT_TIMEOUT_MS, READ_TIMEOUT_MS };
