// The REST client: JSON in and out, the CSRF header on every non-GET call, errors as
// ApiError, and the end of the session (401) reported once to the app.

import { session } from "./session.js";

const BASE = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status; // HTTP status; 0 when the server could not be reached
    this.code = code;
    this.retryAfter = retryAfter; // seconds, from Retry-After (429), else null
  }

  /// True when the app has already gone back to the login page for this error.
  get sessionEnded() {
    return this.status === 401 && this.code === "session_ended";
  }
}

let sessionEndedHandler = () => {};

/// `fn()` runs when a call is answered 401 (the session ended: idle timeout, logout
/// elsewhere, password changed).
export function onSessionEnded(fn) {
  sessionEndedHandler = fn;
}

function url(path, query) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {}))
    if (v !== undefined && v !== null && v !== "") params.set(k, v);
  const qs = params.toString();
  return BASE + path + (qs ? "?" + qs : "");
}

/// Calls the API. Options: `query` (object, empty values left out), `body` (JSON),
/// `headers`, `allow401` (a 401 is the caller's to explain, e.g. wrong credentials at
/// login, instead of ending the session), `withPassword` (the body carries the user's
/// password: a 401 is a wrong password if the session is still alive). Resolves to the
/// parsed JSON answer ({} when empty).
export async function api(
  method,
  path,
  { query, body, headers, allow401 = false, withPassword = false } = {},
) {
  const h = { Accept: "application/json", ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  if (method !== "GET" && session.csrfToken) h["X-CSRF-Token"] = session.csrfToken;
  let res;
  try {
    res = await fetch(url(path, query), {
      method,
      headers: h,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "unreachable", "The server cannot be reached.", null);
  }
  const text = await res.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = {};
  }
  if (res.ok) return data;
  const err = (data && data.error) || {};
  const retry = res.headers.get("Retry-After");
  const message = err.message || `${res.status} ${res.statusText}`;
  if (res.status === 401 && withPassword) {
    await api("GET", "/session"); // throws, and ends the session, if it is gone
    throw new ApiError(401, err.code, message, null);
  }
  if (res.status === 401 && !allow401) {
    sessionEndedHandler();
    throw new ApiError(401, "session_ended", message, null);
  }
  throw new ApiError(
    res.status,
    err.code || "http_" + res.status,
    message,
    retry === null ? null : Number(retry),
  );
}

/// Fetches a list page: resolves to {rows, next}, `key` naming the array in the answer.
export async function page(path, key, query, cursor) {
  const data = await api("GET", path, { query: { ...query, cursor } });
  return { rows: data[key] || [], next: data.next_cursor || null };
}

/// The text a dialog shows for a refused request. A 401 reaching a dialog is a wrong
/// password: api() with `withPassword` has made sure the session is still alive.
export function describeError(e) {
  switch (e.status) {
    case 0:
      return e.message;
    case 401:
      return "Wrong password";
    case 429:
      return e.retryAfter !== null ? `Locked, try again in ${e.retryAfter} s` : `Locked: ${e.message}`;
    case 403:
      return `Not allowed: ${e.message}`;
    default:
      return e.message;
  }
}
