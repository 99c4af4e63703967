// The Node.js runner's routing through the egress proxy (egress.mjs): fetch and the http/https
// modules go to the proxy in HTTPS_PROXY/HTTP_PROXY with the broker token as the proxy
// password, https as CONNECT, http in absolute form; NO_PROXY hosts directly; a refusal is
// EgressDenied. A local socket plays the proxy.
import assert from "node:assert/strict";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { after, before, test } from "node:test";

import { classify } from "../../operator/docrelay/runner/node/contract.mjs";
import { installEgress, proxyFor } from "../../operator/docrelay/runner/node/egress.mjs";

const TOKEN = "broker-token-0123";
const AUTH = `Basic ${Buffer.from(`run:${TOKEN}`).toString("base64")}`;
const heads = [];
let proxy;
let direct;
let directHits = 0;

function proxyServer() {
  return net.createServer((socket) => {
    let head = "";
    socket.on("data", (chunk) => {
      head += chunk.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      const [line, ...rest] = head.slice(0, end).split("\r\n");
      const auth = rest.find((h) => h.toLowerCase().startsWith("proxy-authorization:"));
      heads.push({ line, auth: auth?.split(": ")[1], body: head.slice(end + 4) });
      if (line.includes("denied.example")) {
        const reason = "denied.example:443 is not in spec.egress.hosts";
        socket.end(`HTTP/1.1 403 Egress Denied: ${reason}\r\nX-Docrelay-Egress-Denied: ${reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      } else {
        socket.end("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
      }
    });
  });
}

before(async () => {
  proxy = proxyServer();
  direct = http.createServer((req, res) => {
    directHits += 1;
    res.end("direct");
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  await new Promise((resolve) => direct.listen(0, "127.0.0.1", resolve));
  const url = `http://run:${TOKEN}@127.0.0.1:${proxy.address().port}`;
  process.env.HTTPS_PROXY = url;
  process.env.HTTP_PROXY = url;
  process.env.NO_PROXY = "127.0.0.1";
  installEgress();
});

after(() => {
  proxy.close();
  direct.close();
});

test("fetch over https asks the proxy for a tunnel with the token; a refusal is EgressDenied", async () => {
  heads.length = 0;
  const error = await fetch("https://denied.example/v1/bills").then(() => null, (e) => e);
  assert.ok(error instanceof TypeError, String(error));
  assert.equal(classify(error), "EgressDenied");
  assert.deepEqual(heads.map((h) => [h.line, h.auth]), [["CONNECT denied.example:443 HTTP/1.1", AUTH]]);
});

test("https.get goes through the same tunnel", async () => {
  heads.length = 0;
  const error = await new Promise((resolve) => {
    https.get("https://denied.example:8443/x", () => resolve(null)).on("error", resolve);
  });
  assert.equal(classify(error), "EgressDenied");
  assert.equal(heads[0].line, "CONNECT denied.example:8443 HTTP/1.1");
  assert.equal(heads[0].auth, AUTH);
});

test("http.get is sent to the proxy in absolute form with the token", async () => {
  heads.length = 0;
  const body = await new Promise((resolve, reject) => {
    http
      .get("http://sink.test:8080/path?q=1", (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve(text));
      })
      .on("error", reject);
  });
  assert.equal(body, "hello");
  assert.equal(heads[0].line, "GET http://sink.test:8080/path?q=1 HTTP/1.1");
  assert.equal(heads[0].auth, AUTH);
});

test("fetch over http posts its body through the proxy and reads the answer", async () => {
  heads.length = 0;
  const answer = await fetch("http://sink.test/bills", { method: "POST", body: JSON.stringify({ n: 1 }) });
  assert.equal(answer.status, 200);
  assert.equal(await answer.text(), "hello");
  assert.equal(answer.url, "http://sink.test/bills");
  assert.equal(heads[0].line, "POST http://sink.test/bills HTTP/1.1");
  assert.equal(heads[0].auth, AUTH);
  assert.equal(heads[0].body, '{"n":1}');
});

test("a plain-http refusal (403 with the proxy's header) is EgressDenied too", async () => {
  const error = await fetch("http://denied.example/x").then(() => null, (e) => e);
  assert.equal(classify(error), "EgressDenied");
});

test("NO_PROXY hosts (the broker) are reached directly", async () => {
  heads.length = 0;
  const answer = await fetch(`http://127.0.0.1:${direct.address().port}/`);
  assert.equal(await answer.text(), "direct");
  assert.equal(directHits, 1);
  assert.deepEqual(heads, []);
});

test("an IPv6 egress proxy (http://[::1]:port) is reached at its address, not the bracketed name", async () => {
  const proxy6 = proxyServer();
  await new Promise((resolve) => proxy6.listen(0, "::1", resolve));
  const saved = { https: process.env.HTTPS_PROXY, http: process.env.HTTP_PROXY };
  const url = `http://run:${TOKEN}@[::1]:${proxy6.address().port}`;
  process.env.HTTPS_PROXY = url;
  process.env.HTTP_PROXY = url;
  try {
    assert.deepEqual(proxyFor(new URL("https://api.example.com/")), { host: "::1", port: proxy6.address().port, auth: AUTH });
    heads.length = 0;
    const error = await fetch("https://denied.example/v1/bills").then(() => null, (e) => e);
    assert.equal(classify(error), "EgressDenied");
    assert.deepEqual(heads.map((h) => [h.line, h.auth]), [["CONNECT denied.example:443 HTTP/1.1", AUTH]]);
    heads.length = 0;
    const answer = await fetch("http://sink.test/bills");
    assert.equal(await answer.text(), "hello");
    assert.equal(heads[0].line, "GET http://sink.test/bills HTTP/1.1");
  } finally {
    process.env.HTTPS_PROXY = saved.https;
    process.env.HTTP_PROXY = saved.http;
    proxy6.close();
  }
});
