// The Node.js runner's masker against the vectors generated from docrelay/masking.py
// (python -m devkit.maskvectors): the same rows, the same forms, the same masked texts.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { inspect } from "node:util";

import { ENCODINGS, Masker, variants } from "../../operator/docrelay/runner/node/masking.mjs";

const vectors = JSON.parse(
  readFileSync(new URL("../unit/vectors/masking.json", import.meta.url), "utf8"),
);

test("the JavaScript table has Python's rows, in order and by name", () => {
  assert.deepEqual(
    ENCODINGS.map(([name]) => name),
    vectors.encodings,
  );
});

for (const { value, forms } of vectors.variants) {
  test(`every form of ${JSON.stringify(value)} is the one Python looks for`, () => {
    assert.deepEqual([...variants(value)].sort(), [...forms].sort());
  });
}

for (const [index, { values, text, masked }] of vectors.texts.entries()) {
  test(`text ${index} masks as Python masks it`, () => {
    assert.equal(new Masker(values).mask(text), masked);
  });

  test(`text ${index} split across two writes at every position masks the same`, () => {
    const masker = new Masker(values);
    for (let at = 0; at <= text.length; at++) {
      const stream = masker.stream();
      const out = stream.feed(text.slice(0, at)) + stream.feed(text.slice(at)) + stream.flush();
      assert.equal(out, masked, `split at ${at}`);
    }
  });
}

test("what console.log makes of a value in an object or a Buffer is masked too", () => {
  for (const { value } of vectors.variants.filter((v) => [...v.value].length >= 4)) {
    const masker = new Masker([value]);
    for (const printed of [inspect({ key: value }), inspect([value]), inspect(Buffer.from(value))]) {
      const masked = masker.mask(printed);
      assert.ok(masked.includes("***"), `${printed} -> ${masked}`);
      assert.ok(!masked.includes(value), masked);
    }
  }
});
