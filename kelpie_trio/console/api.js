// The console's only way to the server: the public API under /v1 (and /metrics), with the
// server password as a bearer token when the server has one.

import { readEvents } from "./sse.js";

const TOKEN_KEY = "kelpie-console-token";
let onUnauthorized = () => {};

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// Called on every 401, so the page can ask for the password.
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function url(path, query) {
  const target = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const one of Array.isArray(value) ? value : [value]) target.searchParams.append(key, one);
  }
  return target;
}

function headers(json) {
  const out = { Accept: json === "text" ? "text/plain" : "application/json" };
  if (json === true) out["Content-Type"] = "application/json";
  const secret = token();
  if (secret) out.Authorization = `Bearer ${secret}`;
  return out;
}

async function failure(response) {
  if (response.status === 401) onUnauthorized();
  let detail = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.detail !== undefined) detail = body.detail;
  } catch {
    // Not JSON (a proxy's page): the status text says enough.
  }
  return new ApiError(response.status, detail);
}

export async function request(method, path, { body, query, signal, text } = {}) {
  const response = await fetch(url(path, query), {
    method,
    headers: headers(text ? "text" : body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  if (text) return response.text();
  const raw = await response.text();
  return raw ? JSON.parse(raw) : null;
}

export const api = {
  get: (path, query, options = {}) => request("GET", path, { query, ...options }),
  post: (path, body, options = {}) => request("POST", path, { body, ...options }),
  patch: (path, body, options = {}) => request("PATCH", path, { body, ...options }),
  del: (path, options = {}) => request("DELETE", path, options),
  text: (path, options = {}) => request("GET", path, { text: true, ...options }),
};

// POST a streaming send; yields each event as the server sends it.
export async function* stream(path, body, { signal } = {}) {
  const response = await fetch(url(path), {
    method: "POST",
    headers: { ...headers(true), Accept: "text/event-stream" },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  yield* readEvents(response);
}
