// Seal a secret value in the browser, exactly as docrelay.sealing.envelope.seal does in
// Python (docs/secrets.md): RSA-OAEP-SHA256 (label = the binding) wraps a fresh AES-256-GCM
// key (associated data = the binding). The value never leaves this function unsealed.

const MAGIC = [0x44, 0x52, 0x53, 0x31]; // "DRS1"
export const MIN_LENGTH = 4; // docrelay.masking.MIN_MASKED_LENGTH: shorter values cannot be masked
export const MAX_BYTES = 32768; // docrelay.models.secret.MAX_PLAINTEXT

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function toBase64(bytes) {
  let raw = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    raw += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(raw);
}

function concat(parts) {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// b"docrelay.io/sealed/v1" NUL namespace NUL integration NUL key (Binding.encode)
export function binding(namespace, integration, key) {
  const encoder = new TextEncoder();
  const parts = [];
  ["docrelay.io/sealed/v1", namespace, integration, key].forEach((part, i) => {
    if (i) parts.push(new Uint8Array([0]));
    parts.push(encoder.encode(part));
  });
  return concat(parts);
}

export function checkValue(value) {
  if (value.length < MIN_LENGTH) {
    return `The value is shorter than ${MIN_LENGTH} characters; such values cannot be masked in run logs, so they are refused.`;
  }
  if (new TextEncoder().encode(value).length > MAX_BYTES) {
    return `The value is longer than ${MAX_BYTES} bytes.`;
  }
  return null;
}

// Returns {sealed, keyId}: the base64 envelope and the sealing key's id (hex).
export async function sealValue(spkiBase64, namespace, integration, key, value, webcrypto) {
  const crypto = webcrypto || globalThis.crypto;
  const subtle = crypto.subtle;
  const problem = checkValue(value);
  if (problem) throw new Error(problem);
  const spki = fromBase64(spkiBase64);
  const keyId = new Uint8Array(await subtle.digest("SHA-256", spki)).slice(0, 8);
  const label = binding(namespace, integration, key);
  const bindingDigest = new Uint8Array(await subtle.digest("SHA-256", label)).slice(0, 8);
  const publicKey = await subtle.importKey(
    "spki", spki, { name: "RSA-OAEP", hash: "SHA-256" }, false, ["encrypt"],
  );
  const dataKey = await subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt"]);
  const rawKey = await subtle.exportKey("raw", dataKey);
  const wrapped = new Uint8Array(
    await subtle.encrypt({ name: "RSA-OAEP", label }, publicKey, rawKey),
  );
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const ciphertext = new Uint8Array(
    await subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: label, tagLength: 128 },
      dataKey,
      new TextEncoder().encode(value),
    ),
  );
  const length = new Uint8Array([wrapped.length >> 8, wrapped.length & 0xff]);
  const blob = concat([
    new Uint8Array(MAGIC), keyId, bindingDigest, length, wrapped, nonce, ciphertext,
  ]);
  return { sealed: toBase64(blob), keyId: hex(keyId) };
}
