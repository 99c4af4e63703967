// The console's only script: live updates from server-sent events, and Add secret, which
// seals the value here in the browser (seal.js) so only ciphertext is ever sent.
import { checkValue, sealValue } from "./seal.js";

function live() {
  const region = document.getElementById("live");
  if (!region || !window.EventSource) return;
  const source = new EventSource(region.dataset.events);
  let pending = null;
  source.onmessage = () => {
    clearTimeout(pending);
    pending = setTimeout(refresh, 300);
  };
  source.addEventListener("gone", () => source.close());
  async function refresh() {
    const response = await fetch(location.href, { headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const next = new DOMParser().parseFromString(await response.text(), "text/html");
    const target = region.dataset.reload ? document.getElementById("main") : region;
    const source = next.getElementById(target.id);
    if (!source) return;
    const focused = document.activeElement && target.contains(document.activeElement);
    if (focused) return; // never move the keyboard user's focus away
    target.replaceChildren(...Array.from(source.childNodes, (n) => document.importNode(n, true)));
  }
}

function addSecret() {
  const form = document.getElementById("add-secret");
  if (!form) return;
  const status = form.querySelector(".status");
  const valueInput = form.querySelector("#secret-value");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = form.elements.key.value;
    const value = valueInput.value;
    const problem = checkValue(value);
    if (problem) {
      status.textContent = problem;
      valueInput.focus();
      return;
    }
    status.textContent = "Sealing in this browser…";
    try {
      const { sealed } = await sealValue(
        form.dataset.spki, form.dataset.namespace, form.dataset.integration, key, value,
      );
      valueInput.value = "";
      form.elements.encryptedValue.value = sealed;
      form.submit(); // the value field has no name: only the key, the ciphertext and the token go
    } catch (error) {
      status.textContent = `Not sealed: ${error.message}`;
    }
  });
}

live();
addSecret();
