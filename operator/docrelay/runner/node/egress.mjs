// The egress proxy for JavaScript code (docs/egress.md): Node's fetch and its http/https
// modules do not read HTTPS_PROXY by themselves, so the runner routes them through the proxy
// the operator set, with the pod's broker token as the proxy password (the runner put it in
// the proxy variables, as the Python runner does). https goes through a CONNECT tunnel,
// plain http as an absolute-form request. A refusal (403 "Egress Denied: ...") becomes an
// error the runner reports as EgressDenied. Code that passes its own agent bypasses this and
// finds no other way out (the pod's network allows only the proxy and the broker).

import http from "node:http";
import https from "node:https";
import net from "node:net";
import { Readable } from "node:stream";
import tls from "node:tls";
import zlib from "node:zlib";

import { EGRESS_DENIED_HEADER } from "./contract.mjs";

function envOf(env, ...names) {
  for (const name of names) if (env[name]) return env[name];
  return "";
}

/** The proxy for a URL, or null (no proxy variable, or NO_PROXY names the host). */
export function proxyFor(url, env = process.env) {
  const raw = url.protocol === "https:" ? envOf(env, "HTTPS_PROXY", "https_proxy") : envOf(env, "HTTP_PROXY", "http_proxy");
  if (!raw) return null;
  const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  for (const entry of envOf(env, "NO_PROXY", "no_proxy").split(",")) {
    const rule = entry.trim().toLowerCase().replace(/:\d+$/, "");
    if (!rule) continue;
    if (rule === "*" || host === rule.replace(/^\./, "") || host.endsWith(rule.startsWith(".") ? rule : `.${rule}`)) {
      return null;
    }
  }
  const proxy = new URL(raw.includes("://") ? raw : `http://${raw}`);
  const auth = proxy.username || proxy.password
    ? `Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString("base64")}`
    : null;
  // An IPv6 proxy's host without the URL's brackets: net.connect wants the bare address.
  return { host: proxy.hostname.replace(/^\[|\]$/g, ""), port: Number(proxy.port || 80), auth };
}

/** The proxy refused (403: a destination the Integration's egress list does not allow). */
export class EgressDenied extends Error {
  constructor(message, statusCode) {
    super(message);
    this.name = "EgressDenied";
    this.statusCode = statusCode;
  }
}

/** A socket tunnelled through the proxy to host:port (CONNECT). */
function tunnel(proxy, host, port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: proxy.host, port: proxy.port });
    let head = Buffer.alloc(0);
    const fail = (error) => {
      socket.destroy();
      reject(error);
    };
    socket.once("error", fail);
    socket.once("connect", () => {
      const target = net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
      const auth = proxy.auth ? `Proxy-Authorization: ${proxy.auth}\r\n` : "";
      socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`);
    });
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > 16384) fail(new Error("the egress proxy's answer is too long"));
        return;
      }
      socket.removeListener("data", onData);
      socket.removeListener("error", fail);
      const statusLine = head.subarray(0, head.indexOf("\r\n")).toString("latin1");
      const status = Number(statusLine.split(" ")[1]);
      if (status === 200) {
        const rest = head.subarray(end + 4);
        if (rest.length) socket.unshift(rest);
        resolve(socket);
        return;
      }
      socket.destroy();
      const text = `Tunnel connection failed: ${statusLine.split(" ").slice(1).join(" ")}`;
      reject(status === 403 ? new EgressDenied(text, status) : Object.assign(new Error(text), { statusCode: status }));
    };
    socket.on("data", onData);
  });
}

/** https through a CONNECT tunnel when a proxy applies, else directly. */
class ProxyHttpsAgent extends https.Agent {
  createConnection(options, callback) {
    const url = new URL(`https://${options.host}:${options.port}`);
    const proxy = proxyFor(url);
    if (!proxy) return super.createConnection(options, callback);
    tunnel(proxy, options.host, options.port || 443).then(
      (socket) => callback(null, tls.connect({ ...options, socket, servername: options.servername || (net.isIP(options.host) ? undefined : options.host) })),
      (error) => callback(error),
    );
    return undefined;
  }
}

/** Plain http as an absolute-form request to the proxy when one applies. */
class ProxyHttpAgent extends http.Agent {
  addRequest(req, options) {
    const port = options.port || 80;
    const url = new URL(`http://${options.host}:${port}`);
    const proxy = proxyFor(url);
    if (proxy) {
      const host = net.isIPv6(options.host) ? `[${options.host}]` : options.host;
      req.path = `http://${host}${port === 80 ? "" : `:${port}`}${req.path}`;
      if (proxy.auth && !req.headersSent) {
        try {
          req.setHeader("Proxy-Authorization", proxy.auth);
        } catch {
          // headers given as an array are already stored: the proxy answers 407
        }
      }
      options = { ...options, host: proxy.host, port: proxy.port, hostname: proxy.host };
    }
    return super.addRequest(req, options);
  }
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

function decoded(res) {
  const encoding = String(res.headers["content-encoding"] || "").toLowerCase();
  if (encoding === "gzip" || encoding === "x-gzip") return res.pipe(zlib.createGunzip());
  if (encoding === "deflate") return res.pipe(zlib.createInflate());
  if (encoding === "br") return res.pipe(zlib.createBrotliDecompress());
  return res;
}

function send(request, url, body, agents) {
  const headers = {};
  request.headers.forEach((value, key) => {
    headers[key] = value;
  });
  if (!("accept-encoding" in headers)) headers["accept-encoding"] = "gzip, deflate, br";
  if (body && !("content-length" in headers)) headers["content-length"] = String(body.length);
  const client = url.protocol === "https:" ? https : http;
  const agent = url.protocol === "https:" ? agents.https : agents.http;
  return new Promise((resolve, reject) => {
    const req = client.request(url, { method: request.method, headers, agent, signal: request.signal }, resolve);
    req.on("error", reject);
    req.end(body);
  });
}

/** fetch through the proxy: the Request normalises what the code passed (bodies, FormData,
 * headers), http/https carry it, a Response goes back. Redirects are followed as fetch does. */
async function proxiedFetch(request, agents) {
  let url = new URL(request.url);
  let method = request.method;
  let body = request.body ? Buffer.from(await request.arrayBuffer()) : undefined;
  for (let hop = 0; ; hop++) {
    let res;
    try {
      res = await send(new Request(url, { method, headers: request.headers, signal: request.signal }), url, body, agents);
    } catch (error) {
      if (error?.name === "AbortError") throw error;
      throw new TypeError("fetch failed", { cause: error });
    }
    const denied = res.headers[EGRESS_DENIED_HEADER];
    if (res.statusCode === 403 && denied) {
      res.resume();
      throw new TypeError("fetch failed", { cause: new EgressDenied(`403 Egress Denied: ${denied}`, 403) });
    }
    if (REDIRECTS.has(res.statusCode) && res.headers.location && request.redirect !== "manual") {
      res.resume();
      if (request.redirect === "error") throw new TypeError("fetch failed", { cause: new Error("unexpected redirect") });
      if (hop >= 20) throw new TypeError("fetch failed", { cause: new Error("redirect count exceeded") });
      url = new URL(res.headers.location, url);
      if (res.statusCode === 303 || ((res.statusCode === 301 || res.statusCode === 302) && method === "POST")) {
        method = method === "HEAD" ? "HEAD" : "GET";
        body = undefined;
      }
      continue;
    }
    const headers = new Headers();
    for (let i = 0; i < res.rawHeaders.length; i += 2) headers.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
    const empty = method === "HEAD" || [101, 204, 205, 304].includes(res.statusCode);
    const stream = empty ? null : Readable.toWeb(decoded(res));
    if (empty) res.resume();
    else {
      headers.delete("content-encoding");
      headers.delete("content-length");
    }
    const response = new Response(stream, { status: res.statusCode, statusText: res.statusMessage, headers });
    Object.defineProperty(response, "url", { value: url.href });
    Object.defineProperty(response, "redirected", { value: hop > 0 });
    return response;
  }
}

/** Route fetch and the http/https modules' default agents through the egress proxy. */
export function installEgress() {
  const agents = { http: new ProxyHttpAgent({ keepAlive: true }), https: new ProxyHttpsAgent({ keepAlive: true }) };
  http.globalAgent = agents.http;
  https.globalAgent = agents.https;
  const direct = globalThis.fetch;
  globalThis.fetch = async function fetch(input, init) {
    const request = new Request(input, init);
    const url = new URL(request.url);
    if (!["http:", "https:"].includes(url.protocol) || !proxyFor(url)) return direct(request);
    return proxiedFetch(request, agents);
  };
  return agents;
}
