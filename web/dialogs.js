// Modal dialogs (<dialog>, built per use and removed when closed) and toasts.

import { el, closeButton } from "./dom.js";
import { describeError } from "./api.js";

/// A modal dialog with a title, a body (scrolls when long), an optional `status` line
/// kept in view under it, and a footer; shown at once. Escape closes it. `testid` names
/// the <dialog>; `size` is "" (a form), "wide" or "full" (nearly the whole window).
/// Returns the <dialog> element.
export function openModal({ testid, title, body, status, footer, size = "" }) {
  const dialog = el(
    "dialog",
    { class: `dialog ${size}`.trim(), testid, "aria-label": title },
    el(
      "header",
      { class: "dialog-head" },
      el("h2", {}, title),
      closeButton("Close", testid + "-close", () => dialog.close()),
    ),
    el("div", { class: "dialog-body" }, body),
    status,
    footer ? el("footer", { class: "dialog-foot" }, footer) : null,
  );
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/// Label / value rows, e.g. what an action will act on.
export function summaryList(rows) {
  return el(
    "dl",
    { class: "summary" },
    rows
      .filter(Boolean)
      .map(([label, value, mono]) => [el("dt", {}, label), el("dd", { class: mono ? "mono" : "" }, value)]),
  );
}

function fieldInput(prefix, f) {
  const props = {
    id: `${prefix}-${f.name}`,
    name: f.name,
    testid: `${prefix}-${f.name}`,
    class: f.mono ? "mono" : "",
    autocomplete: f.autocomplete || "off",
    spellcheck: "false",
    placeholder: f.placeholder,
    "aria-describedby": f.hint ? `${prefix}-${f.name}-hint` : null,
  };
  if (f.type === "select") {
    return el(
      "select",
      props,
      f.options.map(([value, label]) => el("option", { value, selected: value === f.value }, label)),
    );
  }
  return el("input", { ...props, type: f.type || "text", value: f.value });
}

/// A dialog with a form. `prefix` makes the test ids: `${prefix}-dialog`,
/// `${prefix}-<field name>`, `${prefix}-submit`, `${prefix}-cancel`, `${prefix}-error`.
/// Fields: {name, label, type ("text" | "password" | "select"), required,
/// options ([value, label] for a select), value, hint, placeholder, mono, autocomplete}.
/// `validate(values)` returns a message or "". `submit(values)` resolves to close the
/// dialog, or throws an ApiError, shown in the dialog (which stays open).
export function openFormDialog({ prefix, title, intro, fields, submitLabel, danger, validate, submit }) {
  const inputs = {};
  const error = el("div", { class: "form-error", role: "alert", testid: `${prefix}-error`, hidden: true });
  const submitBtn = el(
    "button",
    { type: "submit", class: danger ? "btn danger" : "btn primary", testid: `${prefix}-submit` },
    submitLabel,
  );
  const cancelBtn = el("button", { type: "button", class: "btn", testid: `${prefix}-cancel` }, "Cancel");
  const rows = fields.map((f) => {
    const input = fieldInput(prefix, f);
    inputs[f.name] = input;
    return el(
      "div",
      { class: "field" },
      el(
        "label",
        { for: input.id },
        f.label,
        f.required ? null : el("span", { class: "optional" }, " (optional)"),
      ),
      input,
      f.hint ? el("div", { class: "hint", id: `${prefix}-${f.name}-hint` }, f.hint) : null,
    );
  });
  const form = el("form", { novalidate: true, class: "dialog-form" }, intro, rows);
  const dialog = openModal({
    testid: `${prefix}-dialog`,
    title,
    body: form,
    status: error,
    footer: [cancelBtn, submitBtn],
  });
  form.id = `${prefix}-form`;
  submitBtn.setAttribute("form", form.id);
  cancelBtn.addEventListener("click", () => dialog.close());

  const showError = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };
  const values = () => Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value]));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (submitBtn.disabled) return;
    const missing = fields.find((f) => f.required && !inputs[f.name].value);
    const problem = missing ? `Fill in “${missing.label}”.` : validate ? validate(values()) : "";
    for (const f of fields) inputs[f.name].removeAttribute("aria-invalid");
    if (missing) inputs[missing.name].setAttribute("aria-invalid", "true");
    showError(problem);
    if (problem) return;
    submitBtn.disabled = true;
    dialog.setAttribute("aria-busy", "true");
    try {
      await submit(values());
      dialog.close();
    } catch (err) {
      if (err.sessionEnded) return;
      showError(describeError(err));
      if (err.status === 401 && inputs.password) {
        inputs.password.value = "";
        inputs.password.focus();
      }
    } finally {
      submitBtn.disabled = false;
      dialog.removeAttribute("aria-busy");
    }
  });
  if (fields.length > 0) inputs[fields[0].name].focus();
  return dialog;
}

/// A short note at the bottom right that goes away by itself. The box is a popover, so
/// it shows above open modal dialogs too.
export function toast(text, kind = "ok") {
  const box = document.getElementById("toasts");
  const note = el(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status", testid: "toast" },
    text,
  );
  box.append(note);
  if (box.matches(":popover-open")) box.hidePopover(); // back on top of the newest dialog
  box.showPopover();
  setTimeout(
    () => {
      note.remove();
      if (!box.firstChild) box.hidePopover();
    },
    kind === "error" ? 8000 : 5000,
  );
}

/// Reports a failed background call (list loads, live refreshes) as a toast; errors of
/// an ended session are already handled by the return to the login page.
export function reportError(err, what) {
  if (err && err.sessionEnded) return;
  toast(`${what}: ${err && err.message ? err.message : err}`, "error");
}
