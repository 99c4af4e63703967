// Masking secret values in text: the same forms as docrelay/masking.py (its ENCODINGS table),
// checked against vectors generated from that table (tests/unit/vectors/masking.json).
// Pure: no I/O. Node.js standard library only.

import { inspect } from "node:util";

export const MASK = "***";
export const MIN_MASKED_LENGTH = 4;

const codePoints = (text) => [...text].length;

export function tooShortToMask(value) {
  return codePoints(value) < MIN_MASKED_LENGTH;
}

// --- the table of encodings, as Python writes each form ---------------------------------------

const ALWAYS_SAFE = new Set(
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~",
);
// The `safe` sets of masking.py's URL_SAFE_SETS.
export const URL_SAFE_SETS = ["", "/", ":", ":/", "@", "/:@", "!'()*~", "!#$&'()*+,/:;=?@~"];

const hex2 = (n) => n.toString(16).padStart(2, "0");
const hex4 = (n) => n.toString(16).padStart(4, "0");
const hex8 = (n) => n.toString(16).padStart(8, "0");

// urllib.parse.quote(value, safe): UTF-8 bytes, %XX upper-case, the safe set kept.
function quote(value, safe) {
  const keep = new Set(safe);
  let out = "";
  for (const byte of Buffer.from(value, "utf8")) {
    const ch = String.fromCharCode(byte);
    out += byte < 0x80 && (ALWAYS_SAFE.has(ch) || keep.has(ch)) ? ch : `%${hex2(byte).toUpperCase()}`;
  }
  return out;
}

function quotePlus(value, safe) {
  return value.includes(" ") ? quote(value, safe + " ").replaceAll(" ", "+") : quote(value, safe);
}

const lowerEscapes = (text) => text.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase());

const JSON_SHORT = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f" };

// json.dumps(value, ensure_ascii=...)[1:-1], as Python writes it.
function json(value, asciiOnly = true) {
  let out = "";
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    const code = value.charCodeAt(i);
    if (JSON_SHORT[ch]) out += JSON_SHORT[ch];
    else if (code < 0x20) out += `\\u${hex4(code)}`;
    else if (asciiOnly && (code < 0x20 || code > 0x7e)) out += `\\u${hex4(code)}`; // UTF-16 units
    else out += ch;
  }
  return out;
}

function jsonHtmlSafe(value) {
  return json(value).replaceAll("<", "\\u003c").replaceAll(">", "\\u003e").replaceAll("&", "\\u0026");
}

function html(value, quoteChars = true, decimal = false) {
  let text = value.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
  if (quoteChars) {
    text = text.replaceAll("'", decimal ? "&#39;" : "&#x27;");
    text = text.replaceAll('"', decimal ? "&#34;" : "&quot;");
  }
  return text;
}

// Python's str.isprintable() per character: not in Cc, Cf, Cs, Co, Cn, Zl, Zp, Zs (but space).
const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

function escapeCodePoint(cp) {
  if (cp <= 0xff) return `\\x${hex2(cp)}`;
  if (cp <= 0xffff) return `\\u${hex4(cp)}`;
  return `\\U${hex8(cp)}`;
}

// repr(value)[1:-1] (asciiOnly: ascii(value)[1:-1]).
function repr(value, asciiOnly = false) {
  const quoteChar = value.includes("'") && !value.includes('"') ? '"' : "'";
  let out = "";
  for (const ch of value) {
    const cp = ch.codePointAt(0);
    if (ch === quoteChar || ch === "\\") out += "\\" + ch;
    else if (ch === "\t") out += "\\t";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${hex2(cp)}`;
    else if (cp < 0x7f) out += ch;
    else if (!asciiOnly && (ch === " " || !NOT_PRINTABLE.test(ch))) out += ch;
    else out += escapeCodePoint(cp);
  }
  return out;
}

// repr(value) with its quotes, as Python writes it.
function reprQuoted(value) {
  const quoteChar = value.includes("'") && !value.includes('"') ? '"' : "'";
  return quoteChar + repr(value) + quoteChar;
}

// Every UTF-8 byte percent-escaped, letters and digits too.
function everyByteEscaped(value, lower = false) {
  const text = [...Buffer.from(value, "utf8")].map((b) => `%${hex2(b).toUpperCase()}`).join("");
  return lower ? text.toLowerCase() : text;
}

// repr(value.encode())[2:-1]
function bytesRepr(value) {
  const bytes = Buffer.from(value, "utf8");
  const hasSingle = bytes.includes(0x27);
  const quoteByte = hasSingle && !bytes.includes(0x22) ? 0x22 : 0x27;
  let out = "";
  for (const b of bytes) {
    if (b === quoteByte || b === 0x5c) out += "\\" + String.fromCharCode(b);
    else if (b === 0x09) out += "\\t";
    else if (b === 0x0a) out += "\\n";
    else if (b === 0x0d) out += "\\r";
    else if (b < 0x20 || b >= 0x7f) out += `\\x${hex2(b)}`;
    else out += String.fromCharCode(b);
  }
  return out;
}

function b64(value, urlSafe, padded) {
  let text = Buffer.from(value, "utf8").toString("base64");
  if (urlSafe) text = text.replaceAll("+", "-").replaceAll("/", "_");
  return padded ? text : text.replace(/=+$/, "");
}

// Python's repr of a short ASCII string, for the rows' names: 'x' or "x'y".
const pyStr = (text) => (text.includes("'") ? `"${text}"` : `'${text}'`);

function urlRows() {
  const rows = [];
  for (const lower of [false, true]) {
    const wrap = (f) => (lower ? (v) => lowerEscapes(f(v)) : f);
    const caseName = lower ? ", lower-case escapes" : "";
    for (const safe of URL_SAFE_SETS) {
      rows.push([`quote safe=${pyStr(safe)}${caseName}`, wrap((v) => quote(v, safe))]);
    }
    for (const safe of ["", "/"]) {
      rows.push([`quote_plus safe=${pyStr(safe)}${caseName}`, wrap((v) => quotePlus(v, safe))]);
    }
  }
  return rows;
}

const hex = (v) => Buffer.from(v, "utf8").toString("hex");

// [name, how a value looks so encoded]: masking.py's ENCODINGS, row for row and by name.
export const ENCODINGS = [
  ["raw", (v) => v],
  ...urlRows(),
  ["base64", (v) => b64(v, false, true)],
  ["base64 unpadded", (v) => b64(v, false, false)],
  ["base64 url-safe", (v) => b64(v, true, true)],
  ["base64 url-safe unpadded", (v) => b64(v, true, false)],
  ["hex", hex],
  ["hex upper-case", (v) => hex(v).toUpperCase()],
  ["json", (v) => json(v)],
  ["json ensure_ascii=False", (v) => json(v, false)],
  ["json html-safe", jsonHtmlSafe],
  ["json in json", (v) => json(json(v))],
  ["json in json ensure_ascii=False", (v) => json(json(v, false), false)],
  ["json ensure_ascii=False in json", (v) => json(json(v, false))],
  ["json in json in json", (v) => json(json(json(v)))],
  ["json url-quoted", (v) => quote(json(v), "")],
  ["json form-encoded", (v) => quotePlus(json(v), "")],
  ["json ensure_ascii=False encodeURIComponent", (v) => quote(json(v, false), "!'()*~")],
  ["every byte percent-escaped", (v) => everyByteEscaped(v)],
  ["every byte percent-escaped, lower-case", (v) => everyByteEscaped(v, true)],
  ["repr", (v) => repr(v)],
  ["ascii", (v) => repr(v, true)],
  // repr(repr(v))[2:-2]
  ["repr of repr", (v) => repr(reprQuoted(v)).slice(1, -1)],
  ["repr of utf-8 bytes", bytesRepr],
  ["html", (v) => html(v)],
  ["html quote=False", (v) => html(v, false)],
  ["html decimal entities", (v) => html(v, true, true)],
  ["html escaped twice", (v) => html(html(v))],
  ["shell-quoted", (v) => v.replaceAll("'", `'"'"'`)],
];

function insideBase64(value) {
  const raw = Buffer.from(value, "utf8");
  const forms = new Set();
  for (const urlSafe of [false, true]) {
    for (const offset of [0, 1, 2]) {
      let text = Buffer.concat([Buffer.alloc(offset), raw]).toString("base64").replace(/=+$/, "");
      if (urlSafe) text = text.replaceAll("+", "-").replaceAll("/", "_");
      const inner = text.slice(Math.floor((offset * 8 + 5) / 6), -1);
      if (inner.length >= MIN_MASKED_LENGTH) forms.add(inner);
    }
  }
  return forms;
}

/** Every form of one value that the masker looks for. */
export function variants(value) {
  if (!value) return new Set();
  const forms = new Set(ENCODINGS.map(([, encode]) => encode(value)));
  for (const form of insideBase64(value)) forms.add(form);
  return new Set([...forms].filter((f) => codePoints(f) >= MIN_MASKED_LENGTH));
}

const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");

// Forms only JavaScript prints, beyond Python's table: how console.log shows a string inside
// an object or array (util.inspect: quotes chosen by content, \x7F style escapes) and a
// Buffer of the value's bytes (`<Buffer 73 6b ...>`, up to its 50-byte cut).
export const JS_ENCODINGS = [
  ["util.inspect", (v) => inspect(v).slice(1, -1)],
  ["Buffer inspect", (v) => [...Buffer.from(v, "utf8").subarray(0, 50)].map(hex2).join(" ")],
];

/** The forms the Node.js runner masks: Python's table and the JavaScript-only rows. */
export function allVariants(value) {
  const forms = variants(value);
  if (!value) return forms;
  for (const [, encode] of JS_ENCODINGS) {
    const form = encode(value);
    if (codePoints(form) >= MIN_MASKED_LENGTH) forms.add(form);
  }
  return forms;
}

export class Masker {
  constructor(values) {
    const forms = new Set();
    this.multiline = false;
    for (const value of values) {
      for (const form of allVariants(value)) forms.add(form);
      this.multiline ||= value.includes("\n");
    }
    // Longest first: at a position, a value's longer encoding wins over a shorter one in it.
    const sorted = [...forms].sort((a, b) => b.length - a.length || (a < b ? -1 : 1));
    this.pattern = sorted.length ? new RegExp(sorted.map(escapeRegExp).join("|"), "g") : null;
    this.longest = sorted.length ? sorted[0].length : 0;
  }

  mask(text) {
    return this.pattern ? text.replace(this.pattern, MASK) : text;
  }

  stream() {
    return new StreamMasker(this);
  }

  // Mask what can be emitted safely: [emitted, held back].
  maskedPrefix(buffer, final) {
    if (!this.pattern) return [buffer, ""];
    let cut = final ? buffer.length : Math.max(0, buffer.length - (this.longest - 1));
    const pieces = [];
    let position = 0;
    this.pattern.lastIndex = 0;
    for (const match of buffer.matchAll(this.pattern)) {
      if (match.index >= cut) break;
      pieces.push(buffer.slice(position, match.index), MASK);
      position = match.index + match[0].length;
      cut = Math.max(cut, position);
    }
    pieces.push(buffer.slice(position, cut));
    return [pieces.join(""), buffer.slice(cut)];
  }
}

/** Masks text that arrives in pieces; call flush() at the end of the stream. */
export class StreamMasker {
  constructor(masker) {
    this.masker = masker;
    this.held = "";
  }

  feed(text) {
    const [emitted, held] = this.masker.maskedPrefix(this.held + text, false);
    this.held = held;
    return emitted;
  }

  flush() {
    const [emitted, held] = this.masker.maskedPrefix(this.held, true);
    this.held = held;
    return emitted;
  }

  // Like feed, but also releases held text up to its last newline (a printed line shows at
  // once), unless a value contains a newline and could continue past it.
  feedLines(text) {
    const emitted = this.feed(text);
    if (this.masker.multiline || !this.held.includes("\n")) return emitted;
    const cut = this.held.lastIndexOf("\n") + 1;
    const line = this.held.slice(0, cut);
    this.held = this.held.slice(cut);
    return emitted + this.masker.mask(line);
  }
}
