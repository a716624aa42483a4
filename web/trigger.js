// The dialogs that register, cancel and reverse response actions. Each one names what
// will be done, to what and on which device, asks for the password where the server
// wants it, and keeps itself open with the server's refusal in plain words.

import { api } from "./api.js";
import { el } from "./dom.js";
import { openFormDialog, summaryList, toast } from "./dialogs.js";
import {
  actionName,
  actionTargetText,
  actionTargetRef,
  eventTypeName,
  DEVICE_ACTIONS,
  REVERSE_OF,
} from "./format.js";
import { deviceLabel } from "./devices.js";
import { session } from "./session.js";

const DESTRUCTIVE = new Set(["delete_file", "terminate_process", "isolate"]);

const COMMENT_FIELD = {
  name: "comment",
  label: "Comment",
  hint: "Kept with the action and in the audit trail.",
};

function passwordField(action) {
  return {
    name: "password",
    label: "Your password",
    type: "password",
    required: true,
    autocomplete: "current-password",
    hint: `${action} needs your password again.`,
  };
}

function deviceText(deviceId) {
  const name = deviceLabel(deviceId);
  return name === deviceId ? deviceId : `${name} (${deviceId})`;
}

/// The event a target names: the key event for "detection".
function targetEvent(incident, target) {
  if (target.kind === "event") return incident.events.find((e) => e.id === target.event_id);
  return incident.events.find((e) => e.key) || incident.events.find((e) => e.id === incident.key_event_id);
}

/// What the action will act on, as summary rows.
function objectRows(type, ev) {
  if (DEVICE_ACTIONS.has(type)) return [["Target", "The whole device"]];
  if (!ev) return [];
  const p = ev.process || {};
  if (type === "terminate_process") return [["Process", `${p.image} (pid ${p.pid})`, true]];
  const file = ev.file || { path: p.image, sha256: p.sha256 };
  return [["File", file.path, true], file.sha256 ? ["SHA-256", file.sha256, true] : null];
}

/// POST /actions with one Idempotency-Key per dialog opening: a double submit, or a
/// retry after a lost answer, registers once.
function actionPoster() {
  const key = crypto.randomUUID();
  return (body) => api("POST", "/actions", { body, headers: { "Idempotency-Key": key }, withPassword: true });
}

/// Opens the dialog for `type` on `target` ({kind: "detection"} or {kind: "event",
/// event_id}) of `incident` (with its events); `avail` is its available-actions answer.
export function openTriggerDialog(type, target, incident, avail) {
  if (type === "start_process") return openStartProcessDialog(incident, avail);
  const ev = targetEvent(incident, target);
  const needsPassword = (avail.password_required || []).includes(type);
  const post = actionPoster();
  openFormDialog({
    prefix: "confirm",
    title: actionName(type),
    intro: [
      el("p", { class: "dialog-lead" }, `${actionName(type)} on ${deviceLabel(incident.device_id)}?`),
      summaryList([
        ["Action", actionName(type)],
        ...objectRows(type, ev),
        ev
          ? [
              "Event",
              `${target.kind === "detection" ? "Detection, " : ""}${eventTypeName(ev.type)} (${ev.id})`,
            ]
          : null,
        ["Device", deviceText(incident.device_id)],
        ["Incident", incident.incident_id, true],
      ]),
    ],
    fields: [...(needsPassword ? [passwordField(actionName(type))] : []), COMMENT_FIELD],
    submitLabel: actionName(type),
    danger: DESTRUCTIVE.has(type),
    submit: async (v) => {
      await post({
        type,
        incident_id: incident.incident_id,
        target,
        params: {},
        password: v.password || "",
        comment: v.comment,
      });
      toast(`${actionName(type)} registered`);
    },
  });
}

/// Absolute on the device's OS family (common/domain.cpp absolute_path).
function isAbsolute(path, osFamily) {
  if (osFamily === "windows") return /^[A-Za-z]:[\\/]/.test(path) || /^\\\\[^\\]/.test(path);
  return path.startsWith("/");
}

function openStartProcessDialog(incident, avail) {
  const os = avail.device_os_family === "windows" ? "windows" : "posix";
  const example = os === "windows" ? "C:\\Windows\\System32\\cmd.exe" : "/usr/bin/env";
  const post = actionPoster();
  openFormDialog({
    prefix: "start-process",
    title: "Start process",
    intro: [
      el("p", { class: "dialog-lead" }, "Runs an executable on the device directly, without a shell."),
      summaryList([
        ["Device", deviceText(incident.device_id)],
        ["OS family", os === "windows" ? "Windows" : "POSIX"],
        ["Incident", incident.incident_id, true],
      ]),
    ],
    fields: [
      {
        name: "path",
        label: "Executable path",
        required: true,
        mono: true,
        placeholder: example,
        hint: "Full absolute path on the device.",
      },
      { name: "workdir", label: "Working directory", mono: true, hint: "Absolute path." },
      {
        name: "args",
        label: "Additional startup keys",
        mono: true,
        hint:
          os === "windows"
            ? "Split like a Windows command line (CommandLineToArgvW)."
            : "Split like shell words (quotes, backslashes); no shell runs them.",
      },
      passwordField("Start process"),
      COMMENT_FIELD,
    ],
    submitLabel: "Start process",
    danger: true,
    validate: (v) => {
      if (!isAbsolute(v.path.trim(), os)) return `The executable path must be absolute (like ${example}).`;
      if (v.workdir.trim() && !isAbsolute(v.workdir.trim(), os))
        return "The working directory must be an absolute path.";
      return "";
    },
    submit: async (v) => {
      const params = { path: v.path.trim() };
      if (v.workdir.trim()) params.working_directory = v.workdir.trim();
      if (v.args.trim()) params.arguments = v.args;
      await post({
        type: "start_process",
        incident_id: incident.incident_id,
        target: { kind: "detection" },
        params,
        password: v.password,
        comment: v.comment,
      });
      toast("Start process registered");
    },
  });
}

/// Asks to cancel `action` (registered, queued or sent).
export function openCancelDialog(action) {
  openFormDialog({
    prefix: "cancel",
    title: "Cancel action",
    intro: [
      el("p", { class: "dialog-lead" }, `Cancel ${actionName(action.type)} before the agent carries it out?`),
      actionSummary(action),
    ],
    fields: [COMMENT_FIELD],
    submitLabel: "Cancel action",
    danger: true,
    submit: async (v) => {
      const { action: a } = await api("POST", `/actions/${encodeURIComponent(action.action_id)}/cancel`, {
        body: { comment: v.comment },
      });
      toast(`${actionName(a.type)}: ${a.state === "cancelling" ? "cancel sent to the agent" : a.state}`);
    },
  });
}

/// Asks to reverse a completed isolate, prevent run or quarantine; `onDone(reverse)`
/// gets the reverse action registered.
export function openReverseDialog(action, onDone) {
  const reverse = REVERSE_OF[action.type];
  const needsPassword = session.passwordRequired.has(reverse);
  openFormDialog({
    prefix: "confirm",
    title: actionName(reverse),
    intro: [
      el(
        "p",
        { class: "dialog-lead" },
        `${actionName(reverse)} on ${deviceLabel(action.device_id)}? It undoes ${actionName(action.type).toLowerCase()}.`,
      ),
      actionSummary(action),
    ],
    fields: [...(needsPassword ? [passwordField(actionName(reverse))] : []), COMMENT_FIELD],
    submitLabel: actionName(reverse),
    submit: async (v) => {
      const { action: r } = await api("POST", `/actions/${encodeURIComponent(action.action_id)}/reverse`, {
        body: { password: v.password || "", comment: v.comment },
        withPassword: true,
      });
      toast(`${actionName(reverse)} registered`);
      onDone(r);
    },
  });
}

function actionSummary(action) {
  return summaryList([
    ["Action", `${actionName(action.type)} (${action.state})`],
    ["Target", actionTargetText(action) || actionTargetRef(action), true],
    ["Device", deviceText(action.device_id)],
    ["Action id", action.action_id, true],
  ]);
}
