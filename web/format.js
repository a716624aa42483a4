// The vocabulary shown to people: action and event names, states, severities, times.

import { el } from "./dom.js";

const ACTION_NAMES = {
  isolate: "Isolate from the network",
  release_isolation: "Release isolation",
  prevent_run: "Prevent run",
  allow_run: "Allow run",
  quarantine: "Move to quarantine",
  restore_from_quarantine: "Restore from quarantine",
  delete_file: "Delete file",
  terminate_process: "Terminate process",
  start_process: "Start process",
};

/// The reverse of each reversible action (docs/actions.md, Reverse actions).
export const REVERSE_OF = {
  isolate: "release_isolation",
  prevent_run: "allow_run",
  quarantine: "restore_from_quarantine",
};

export const ACTION_STATES = [
  "registered",
  "queued",
  "sent",
  "cancelling",
  "acknowledged",
  "completed",
  "failed",
  "expired",
  "cancelled",
  "reverted",
];

export const FINAL_STATES = new Set(["completed", "failed", "expired", "cancelled", "reverted"]);

/// States from which a user may still cancel (the agent has not acknowledged yet).
export const CANCELLABLE_STATES = new Set(["registered", "queued", "sent"]);

export const SEVERITIES = ["low", "medium", "high", "critical"];

/// Incident statuses the server assigns (every incident is stored as "new").
export const INCIDENT_STATUSES = ["new"];

const EVENT_NAMES = {
  process_started: "Process started",
  file_created: "File created",
  file_modified: "File modified",
  network_connection: "Network connection",
  module_loaded: "Module loaded",
};

/// Device actions act on the device as a whole; the others on the target event's object.
export const DEVICE_ACTIONS = new Set(["isolate", "release_isolation", "start_process"]);

export function actionName(type) {
  return ACTION_NAMES[type] || type;
}

export function eventTypeName(type) {
  return EVENT_NAMES[type] || type;
}

export function capitalize(s) {
  return s ? s[0].toUpperCase() + s.slice(1) : s;
}

/// Last component of a path: Windows paths (with a backslash) split at backslashes
/// only, POSIX paths at slashes.
function basename(path) {
  const p = String(path || "");
  const parts = p.split(p.includes("\\") ? "\\" : "/");
  return parts[parts.length - 1] || p;
}

/// RFC 3339 UTC with microseconds, from microseconds since the epoch.
export function isoFromUs(us) {
  const ms = Math.floor(us / 1000);
  const micro = String(((us % 1000) + 1000) % 1000).padStart(3, "0");
  return new Date(ms).toISOString().replace(/Z$/, micro + "Z");
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/// "2026-12-02 11:04:05" in the browser's time zone.
function localTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || "";
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Local time made short for lists: "14:03:05" today, "Dec 1 14:03" this year, else
/// the date.
function shortTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || "";
  const now = new Date();
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (d.toDateString() === now.toDateString()) return `${hm}:${pad(d.getSeconds())}`;
  if (d.getFullYear() === now.getFullYear()) return `${MONTHS[d.getMonth()]} ${d.getDate()} ${hm}`;
  return localTime(iso).slice(0, 10);
}

/// A <time> showing local time (short: shortTime()), with the full ISO value as its
/// title.
export function timeEl(iso, short = false) {
  if (!iso) return el("span", { class: "muted" }, "—");
  return el(
    "time",
    { datetime: iso, title: `${localTime(iso)} local\n${iso}` },
    short ? shortTime(iso) : localTime(iso),
  );
}

/// RFC 3339 UTC without fractions (the form the list filters take).
export function utcFromMs(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/// A value from <input type="datetime-local"> (local time) as utcFromMs(), or "".
export function utcFromLocalInput(value) {
  const ms = value ? new Date(value).getTime() : NaN;
  return Number.isNaN(ms) ? "" : utcFromMs(ms);
}

export function severityBadge(severity) {
  const known = SEVERITIES.includes(severity) ? severity : "unknown";
  return el("span", { class: `badge sev sev-${known}` }, capitalize(severity || "unknown"));
}

export function stateBadge(state) {
  const known = ACTION_STATES.includes(state) ? state : "unknown";
  return el("span", { class: `badge state state-${known}`, data: { state: state } }, capitalize(state));
}

/// Text that may be long: shown cut by CSS, whole in the title.
export function truncated(text, extraClass = "") {
  return el("span", { class: `trunc ${extraClass}`.trim(), title: text }, text);
}

/// What an action acts on, from its params: the file, the process, or the device.
export function actionTargetText(action) {
  const p = action.params || {};
  if (action.type === "terminate_process" && p.image) return `${p.image} (pid ${p.pid})`;
  if (action.type === "start_process") return [p.path, p.arguments].filter(Boolean).join(" ");
  if (p.path) return p.path;
  if (p.image) return p.pid ? `${p.image} (pid ${p.pid})` : p.image;
  return "";
}

/// The event the action's target names: "Detection" or "Event <id>".
export function actionTargetRef(action) {
  const t = action.target || {};
  return t.kind === "event" ? `Event ${t.event_id}` : capitalize(t.kind || "");
}

/// An activity event's object in a few words: the program or file name, the remote
/// address of a connection, else its detail.
export function eventLabel(ev) {
  switch (ev.type) {
    case "process_started":
      return basename(ev.process && ev.process.image);
    case "file_created":
    case "file_modified":
    case "module_loaded":
      return basename(ev.file && ev.file.path) || ev.detail || "";
    case "network_connection":
      return (ev.detail || "").split("-> ").pop();
    default:
      return ev.detail || "";
  }
}

/// The primary object of an activity event, as one line.
export function eventObject(ev) {
  if (ev.type === "process_started" && ev.process) return `${ev.process.image} (pid ${ev.process.pid})`;
  if (ev.file) return ev.file.path;
  if (ev.process) return `${ev.process.image} (pid ${ev.process.pid})`;
  return "";
}
