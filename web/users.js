// Users (administrators only): list, create, change role, disable / enable, reset
// password, delete.

import { api, page } from "./api.js";
import { el, clear } from "./dom.js";
import { openFormDialog, reportError, toast } from "./dialogs.js";
import { capitalize, timeEl } from "./format.js";
import { session } from "./session.js";

const ROLES = [
  ["operator", "Operator (view only)"],
  ["security_officer", "Security officer"],
  ["administrator", "Administrator"],
];
const MIN_PASSWORD = 12;
const USERNAME = /^[A-Za-z0-9._-]{1,64}$/;

function roleName(role) {
  return capitalize(role.replace(/_/g, " "));
}

const passwordFields = (label) => [
  {
    name: "password",
    label,
    type: "password",
    required: true,
    autocomplete: "new-password",
    hint: `At least ${MIN_PASSWORD} characters.`,
  },
  {
    name: "repeat",
    label: "Repeat the password",
    type: "password",
    required: true,
    autocomplete: "new-password",
  },
];

function passwordProblem(v) {
  if (v.password.length < MIN_PASSWORD) return `The password needs at least ${MIN_PASSWORD} characters.`;
  if (v.password !== v.repeat) return "The two passwords differ.";
  return "";
}

function userPath(name) {
  return "/users/" + encodeURIComponent(name);
}

export class UsersPage {
  constructor() {
    this.tbody = document.getElementById("user-rows");
    this.status = document.getElementById("user-status");
    document.getElementById("user-new").addEventListener("click", () => this.openCreate());
  }

  async load() {
    this.status.textContent = "Loading…";
    try {
      const users = [];
      let cursor;
      do {
        const { rows, next } = await page("/users", "users", { limit: 5000 }, cursor);
        users.push(...rows);
        cursor = next;
      } while (cursor);
      this.render(users);
    } catch (e) {
      this.status.textContent = "";
      reportError(e, "Users could not be loaded");
    }
  }

  render(users) {
    clear(this.tbody);
    for (const u of users) this.tbody.append(this.row(u));
    this.status.textContent = `${users.length} user${users.length === 1 ? "" : "s"}`;
  }

  row(u) {
    const self = session.user && u.username === session.user.username;
    const button = (text, testid, run, cls = "btn small") =>
      el(
        "button",
        { type: "button", class: cls, testid, "aria-label": `${text}: ${u.username}`, on: { click: run } },
        text,
      );
    return el(
      "tr",
      { testid: "user-row", data: { username: u.username } },
      el("td", { class: "mono" }, u.username, self ? el("span", { class: "sub" }, "you") : null),
      el("td", {}, roleName(u.role)),
      el("td", {}, timeEl(u.created_at)),
      el(
        "td",
        {},
        u.locked ? el("span", { class: "badge warn" }, "Locked") : el("span", { class: "muted" }, "No"),
      ),
      el("td", {}, u.disabled ? el("span", { class: "badge state-cancelled" }, "Disabled") : "Active"),
      el(
        "td",
        { class: "row-buttons" },
        button("Role…", "user-role", () => this.openRole(u)),
        u.disabled
          ? button("Enable", "user-enable", () => this.enable(u))
          : button("Disable", "user-disable", () => this.openDisable(u)),
        button("Reset password…", "user-reset-password", () => this.openPassword(u)),
        button("Delete…", "user-delete", () => this.openDelete(u), "btn small danger-text"),
      ),
    );
  }

  /// Runs a change, then says so and reloads the list.
  async change(method, name, body, done) {
    await api(method, userPath(name), { body });
    toast(done);
    this.load();
  }

  openCreate() {
    openFormDialog({
      prefix: "user-create",
      title: "New user",
      fields: [
        {
          name: "username",
          label: "User name",
          required: true,
          mono: true,
          hint: "1–64 characters: letters, digits, dot, underscore, hyphen.",
        },
        ...passwordFields("Password"),
        { name: "role", label: "Role", type: "select", required: true, options: ROLES, value: "operator" },
      ],
      submitLabel: "Create user",
      validate: (v) =>
        USERNAME.test(v.username)
          ? passwordProblem(v)
          : "The user name may have 1–64 letters, digits, dots, underscores and hyphens.",
      submit: async (v) => {
        await api("POST", "/users", { body: { username: v.username, password: v.password, role: v.role } });
        toast(`User ${v.username} created`);
        this.load();
      },
    });
  }

  openRole(u) {
    openFormDialog({
      prefix: "user-role",
      title: `Role of ${u.username}`,
      fields: [
        { name: "role", label: "Role", type: "select", required: true, options: ROLES, value: u.role },
      ],
      submitLabel: "Save role",
      submit: (v) =>
        this.change(
          "PATCH",
          u.username,
          { role: v.role },
          `${u.username} is now ${roleName(v.role).toLowerCase()}`,
        ),
    });
  }

  openDisable(u) {
    openFormDialog({
      prefix: "user-disable",
      title: `Disable ${u.username}`,
      intro: el(
        "p",
        { class: "dialog-lead" },
        `${u.username} will not be able to sign in or use tokens until enabled again.`,
      ),
      fields: [],
      submitLabel: "Disable user",
      danger: true,
      submit: () => this.change("PATCH", u.username, { disabled: true }, `${u.username} disabled`),
    });
  }

  async enable(u) {
    try {
      await this.change("PATCH", u.username, { disabled: false }, `${u.username} enabled`);
    } catch (e) {
      reportError(e, `${u.username} could not be changed`);
    }
  }

  openPassword(u) {
    openFormDialog({
      prefix: "user-password",
      title: `New password for ${u.username}`,
      intro: el("p", { class: "dialog-lead" }, `Their sessions and tokens end when the password changes.`),
      fields: passwordFields("New password"),
      submitLabel: "Set password",
      validate: passwordProblem,
      submit: (v) =>
        this.change("PATCH", u.username, { password: v.password }, `Password of ${u.username} changed`),
    });
  }

  openDelete(u) {
    openFormDialog({
      prefix: "user-delete",
      title: `Delete ${u.username}`,
      intro: el(
        "p",
        { class: "dialog-lead" },
        `Delete the user ${u.username}? Their sessions and tokens end. This cannot be undone.`,
      ),
      fields: [],
      submitLabel: "Delete user",
      danger: true,
      submit: () => this.change("DELETE", u.username, undefined, `User ${u.username} deleted`),
    });
  }

  reset() {
    clear(this.tbody);
    this.status.textContent = "";
  }
}
