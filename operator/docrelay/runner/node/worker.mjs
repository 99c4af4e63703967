// The code's thread: load the integration's code, call its handler once, report the outcome
// to the runner's main thread (runner.mjs), which keeps the deadline and masks what is printed.

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { parentPort, workerData } from "node:worker_threads";

import { classify, describe, egressDenial, summarize, tracebackTail } from "./contract.mjs";

const { codeFile, esm, event, run, attempt, deadline, egress, sentinel } = workerData;

function failure(errorClass, error, message) {
  const [kind, text] = describe(error);
  return {
    status: "Failed",
    errorClass,
    exceptionType: kind,
    message: message ?? text,
    tracebackTail: tracebackTail(error),
  };
}

function egressMessage(error, kind) {
  return `EgressDenied: ${egressDenial(error)} (the egress proxy refused; ${kind})`;
}

// The outcome goes by message, what the code printed by the stdout and stderr streams: the
// sentinel, written last on each, tells the main thread that it has everything.
function report(outcome) {
  parentPort.postMessage({ kind: "outcome", outcome });
  process.stdout.write(sentinel);
  process.stderr.write(sentinel);
}

async function load() {
  if (egress) (await import("./egress.mjs")).installEgress();
  try {
    const loaded = esm ? await import(pathToFileURL(codeFile).href) : createRequire(codeFile)(codeFile);
    const handler = esm ? (loaded.handler ?? loaded.default?.handler) : loaded?.handler;
    if (typeof handler !== "function") {
      report({
        status: "Failed",
        errorClass: "ConfigurationError",
        exceptionType: "ConfigurationError",
        message: "the code exports no handler(event, context)",
      });
      return null;
    }
    return handler;
  } catch (error) {
    console.error(error);
    const [kind, text] = describe(error);
    if (error instanceof SyntaxError) {
      const at = /handler\.[cm]js:(\d+)/.exec(String(error.stack));
      report({
        status: "Failed",
        errorClass: "ConfigurationError",
        exceptionType: "ConfigurationError",
        message: `SyntaxError${at ? ` at line ${at[1]}` : ""}: ${error.message}`,
      });
    } else if (classify(error) === "EgressDenied") {
      report(failure("EgressDenied", error, egressMessage(error, kind)));
    } else {
      report(failure("ConfigurationError", error, `loading the code: ${text}`));
    }
    return null;
  }
}

// handler(event, context), or as Lambda's Node.js runtime also allows, a handler that takes a
// third argument: callback(error, result).
function call(handler, event, context) {
  if (handler.length < 3) return handler(event, context);
  return new Promise((resolve, reject) => {
    const callback = (error, result) => (error ? reject(error) : resolve(result));
    const returned = handler(event, context, callback);
    if (returned && typeof returned.then === "function") returned.then(resolve, reject);
  });
}

const handler = await load();
if (handler) {
  const context = {
    functionName: run,
    awsRequestId: `${run}-${attempt}`,
    runName: run,
    attempt,
    getRemainingTimeInMillis: () => Math.max(0, Math.floor(deadline - Date.now())),
  };
  try {
    const result = await call(handler, event, context);
    report({ status: "Succeeded", resultSummary: summarize(result) });
  } catch (error) {
    console.error(error);
    const errorClass = classify(error);
    const [kind] = describe(error);
    report(failure(errorClass, error, errorClass === "EgressDenied" ? egressMessage(error, kind) : undefined));
  }
}
