// Small DOM helpers: elements are built with h(), never from HTML strings, so text from
// the server (an agent's name, a memory block, a tool's output) is always shown as text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const announcer = () => document.getElementById("announcer");

// Said once by screen readers (a polite live region), e.g. "Agent created".
export function announce(text) {
  const region = announcer();
  if (!region) return;
  region.textContent = "";
  // A fresh text node after a tick, so the same message twice is announced twice.
  setTimeout(() => { region.textContent = text; }, 50);
}

export function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function shortId(id) {
  if (!id) return "";
  const dash = id.indexOf("-");
  return dash < 0 ? id : `${id.slice(0, dash)}-${id.slice(dash + 1, dash + 9)}`;
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, describe(error));
}

export function describe(error) {
  if (error && error.detail !== undefined) {
    const detail = error.detail;
    if (typeof detail === "string") return `${error.status}: ${detail}`;
    if (Array.isArray(detail)) {
      return `${error.status}: ` + detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    }
    return `${error.status}: ${JSON.stringify(detail)}`;
  }
  return String(error && error.message ? error.message : error);
}

export function pretty(value) {
  if (typeof value === "string") {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
  }
  return JSON.stringify(value, null, 2);
}

// The modal confirmation (a native <dialog>: focus is trapped and Escape cancels).
export function confirmDialog(title, text, okLabel = "Delete") {
  const dialog = document.getElementById("confirm");
  dialog.querySelector("#confirm-title").textContent = title;
  dialog.querySelector("#confirm-text").textContent = text;
  dialog.querySelector("#confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (opener && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === "ok");
    }, { once: true });
    dialog.showModal();
  });
}
