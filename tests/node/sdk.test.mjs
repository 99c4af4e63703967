// @docrelay/sdk against a local HTTP server playing the broker: the paths and bodies it sends,
// the projected token on every call, what it returns, and its typed errors (docs/runner.md).
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

const require = createRequire(import.meta.url);
const sdk = require("../../operator/docrelay/runner/node/sdk/index.js");

const seen = [];
const answers = new Map();
let server;

before(async () => {
  server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString()) : null;
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization, body });
      const [status, answer, headers = {}] = answers.get(`${req.method} ${req.url}`) ?? [404, { error: "no such path" }];
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const dir = mkdtempSync(path.join(tmpdir(), "sdk-test-"));
  writeFileSync(path.join(dir, "token"), "projected-token\n");
  process.env.DOCRELAY_BROKER_URL = `http://127.0.0.1:${server.address().port}`;
  process.env.DOCRELAY_BROKER_TOKEN_PATH = path.join(dir, "token");
});

after(() => server.close());

test("getDocument, getValidationResults and getDocumentPortalUrl ask the broker with the token", async () => {
  answers.set("GET /v1/broker/documents/doc%2F1", [200, { data: { invoiceNumber: "INV-1" }, meta: {} }]);
  answers.set("GET /v1/broker/documents/doc%2F1/validation-results", [200, { results: [{ ok: true }] }]);
  answers.set("GET /v1/broker/documents/doc%2F1/portal-url", [200, { url: "https://portal/doc" }]);
  seen.length = 0;
  assert.equal((await sdk.getDocument("doc/1")).data.invoiceNumber, "INV-1");
  assert.deepEqual(await sdk.getValidationResults("doc/1"), [{ ok: true }]);
  assert.equal(await sdk.getDocumentPortalUrl("doc/1"), "https://portal/doc");
  assert.deepEqual(seen.map((s) => s.auth), Array(3).fill("Bearer projected-token"));
});

test("apiRequest sends the request as the broker expects and throws ApiRequestError on non-2xx", async () => {
  answers.set("POST /v1/broker/accounts/xero/request", [200, { success: true, data: { id: 7 }, status_code: 201, headers: {} }]);
  seen.length = 0;
  const answer = await sdk.apiRequest("xero", "https://api.xero.com/bills?x=1", {
    body: { total: 5 },
    headers: { "X-Tenant": 3 },
    files: { receipt: ["r.pdf", Buffer.from("%PDF"), "application/pdf"] },
  });
  assert.equal(answer.status_code, 201);
  assert.deepEqual(seen[0].body, {
    url: "https://api.xero.com/bills?x=1",
    method: "POST",
    headers: { "X-Tenant": "3" },
    json: { total: 5 },
    files: [{ field: "receipt", filename: "r.pdf", contentType: "application/pdf", contentBase64: "JVBERg==" }],
  });
  answers.set("POST /v1/broker/accounts/xero/request", [200, { success: false, data: "busy", status_code: 503, headers: {} }]);
  await assert.rejects(sdk.apiRequest("xero", "https://api.xero.com/bills"), (error) => {
    assert.ok(error instanceof sdk.ApiRequestError);
    assert.equal(error.statusCode, 503);
    assert.equal(error.retryable, true);
    assert.equal(error.message, "apiRequest POST https://api.xero.com/bills: the target answered 503");
    return true;
  });
});

test("executeAction and uploadFile", async () => {
  answers.set("POST /v1/broker/accounts/apn_1/actions", [200, { success: true, result: { ret: { id: "b1" }, exports: {}, os: [] } }]);
  answers.set("POST /v1/broker/accounts/apn_1/files", [200, { url: "https://files/f1?sig=x" }]);
  seen.length = 0;
  assert.deepEqual((await sdk.executeAction("apn_1", "xero-create-bill", { a: 1 })).result.ret, { id: "b1" });
  assert.equal(await sdk.uploadFile("apn_1", "hello", "h.txt", "text/plain"), "https://files/f1?sig=x");
  assert.deepEqual(seen[0].body, { toolName: "xero-create-bill", toolParams: { a: 1 } });
  assert.deepEqual(seen[1].body, { fileName: "h.txt", contentType: "text/plain", contentBase64: "aGVsbG8=" });
});

const REFUSALS = [
  ["GET", "/v1/broker/documents/gone", () => sdk.getDocument("gone"), 404, sdk.DocumentNotFound, false],
  ["GET", "/v1/broker/documents/theirs", () => sdk.getDocument("theirs"), 403, sdk.Forbidden, false],
  ["GET", "/v1/broker/documents/busy", () => sdk.getDocument("busy"), 503, sdk.BrokerUnavailable, true],
  ["POST", "/v1/broker/accounts/a/actions", () => sdk.executeAction("a", "t", {}), 429, sdk.RateLimited, true],
  ["POST", "/v1/broker/accounts/b/actions", () => sdk.executeAction("b", "t", {}), 504, sdk.UpstreamTimeout, true],
  ["POST", "/v1/broker/accounts/c/actions", () => sdk.executeAction("c", "t", {}), 404, sdk.NotFound, false],
  ["POST", "/v1/broker/accounts/d/actions", () => sdk.executeAction("d", "t", {}), 422, sdk.ActionFailed, false],
  ["POST", "/v1/broker/accounts/e/actions", () => sdk.executeAction("e", "t", {}), 403, sdk.Forbidden, false],
];

for (const [method, url, call, status, kind, retryable] of REFUSALS) {
  test(`${status} on ${url} throws ${kind.name} (retryable: ${retryable})`, async () => {
    answers.set(`${method} ${url}`, [status, { error: "refused" }, { "retry-after": "7" }]);
    await assert.rejects(call(), (error) => {
      assert.ok(error instanceof kind, `${error.name}`);
      assert.ok(error instanceof sdk.SdkError);
      assert.equal(error.statusCode, status);
      assert.equal(error.retryable, retryable);
      if (kind === sdk.RateLimited) assert.equal(error.retryAfter, 7);
      return true;
    });
  });
}

test("no broker answering is BrokerUnavailable, retryable, with no status", async () => {
  const url = process.env.DOCRELAY_BROKER_URL;
  process.env.DOCRELAY_BROKER_URL = "http://127.0.0.1:2";
  try {
    await assert.rejects(sdk.getDocument("x"), (error) => {
      assert.ok(error instanceof sdk.BrokerUnavailable);
      assert.equal(error.statusCode, null);
      assert.equal(error.retryable, true);
      return true;
    });
  } finally {
    process.env.DOCRELAY_BROKER_URL = url;
  }
});
