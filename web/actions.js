// Response actions: every action, newest first, kept current by action.* events, with
// cancel and reverse, and the selected action's transitions and result.

import { api, page } from "./api.js";
import { el, clear, closeButton, rowNavigation, replaceRows } from "./dom.js";
import { reportError, summaryList } from "./dialogs.js";
import { deviceCell, deviceLabel, resolveDeviceInput } from "./devices.js";
import { openCancelDialog, openReverseDialog } from "./trigger.js";
import { canAct } from "./session.js";
import {
  actionName,
  actionTargetRef,
  actionTargetText,
  capitalize,
  isoFromUs,
  stateBadge,
  timeEl,
  truncated,
  CANCELLABLE_STATES,
  DEVICE_ACTIONS,
  FINAL_STATES,
  REVERSE_OF,
} from "./format.js";

const PAGE_SIZE = 100;

/// The table's columns (their widths are CSS classes); the unnamed last one holds the
/// Cancel / Reverse buttons and exists only for roles that act.
const COLUMNS = [
  { name: "Type", width: "w-action" },
  { name: "Target", width: "" },
  { name: "State", width: "w-state" },
  { name: "Device", width: "w-device" },
  { name: "Incident", width: "w-incident" },
  { name: "Requested by", width: "w-user" },
  { name: "Created", width: "w-time" },
  { name: "Updated", width: "w-time" },
  { name: "", width: "w-buttons" },
];

function reversible(a) {
  return a.state === "completed" && a.type in REVERSE_OF && !a.reversed_by;
}

export class ActionList {
  /// `onOpenIncident(id)` shows an incident (from an action's details).
  constructor({ onOpenIncident }) {
    this.onOpenIncident = onOpenIncident;
    this.form = document.getElementById("action-filters");
    this.cols = document.getElementById("action-cols");
    this.thead = document.getElementById("action-head");
    this.tbody = document.getElementById("action-rows");
    this.more = document.getElementById("action-more");
    this.status = document.getElementById("action-status");
    this.details = document.getElementById("action-details");
    this.split = this.details.closest(".split");
    this.rows = [];
    this.next = null;
    this.loading = null;
    this.pending = [];
    this.selectedId = null;
    this.filters = {};

    rowNavigation(this.tbody, (tr) => this.select(tr.dataset.actionId));
    this.form.addEventListener("change", () => this.load());
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.load();
    });
    document.getElementById("action-filters-reset").addEventListener("click", () => {
      this.form.reset();
      this.load();
    });
    this.more.addEventListener("click", () => this.loadMore());
    this.showEmptyDetails();
  }

  readFilters() {
    return {
      device_id: resolveDeviceInput(this.form.elements.device.value),
      state: this.form.elements.state.value,
    };
  }

  async load() {
    this.filters = this.readFilters();
    const run = page("/actions", "actions", { ...this.filters, limit: PAGE_SIZE });
    this.loading = run;
    this.status.textContent = "Loading…";
    try {
      const { rows, next } = await run;
      if (this.loading !== run) return;
      this.rows = rows;
      this.next = next;
    } catch (e) {
      if (this.loading !== run) return;
      this.rows = [];
      this.next = null;
      reportError(e, "Response actions could not be loaded");
    }
    this.loading = null;
    const late = this.pending;
    this.pending = [];
    this.render();
    late.forEach((d) => this.applyEvent(d));
    if (this.selectedId) this.showDetails(this.selectedId);
  }

  async loadMore() {
    if (!this.next || this.loading) return;
    this.more.disabled = true;
    try {
      const { rows, next } = await page(
        "/actions",
        "actions",
        { ...this.filters, limit: PAGE_SIZE },
        this.next,
      );
      const have = new Set(this.rows.map((r) => r.action_id));
      this.rows.push(...rows.filter((r) => !have.has(r.action_id)));
      this.next = next;
      this.render();
    } catch (e) {
      reportError(e, "More actions could not be loaded");
    } finally {
      this.more.disabled = false;
    }
  }

  /// An action.<state> event: the row changes in place; a new action is fetched whole.
  applyEvent(d) {
    if (this.loading) {
      this.pending.push(d);
      return;
    }
    const row = this.rows.find((r) => r.action_id === d.action_id);
    if (!row) {
      const f = this.filters;
      if ((!f.device_id || f.device_id === d.device_id) && (!f.state || f.state === d.state))
        this.fetchNew(d.action_id);
      return;
    }
    row.state = d.state;
    row.updated_at = isoFromUs(d.updated_at);
    this.replaceRow(row);
    // A final state brings the result, and for a reverse a changed original.
    if (FINAL_STATES.has(d.state)) {
      this.refresh(d.action_id);
      if (row.reverses) this.refresh(row.reverses);
    } else if (d.action_id === this.selectedId) this.showDetails(d.action_id);
  }

  async fetchNew(id) {
    try {
      const { action } = await api("GET", "/actions/" + encodeURIComponent(id));
      const known = this.rows.find((r) => r.action_id === id);
      if (known) {
        // Several events of one new action fetched it more than once: keep the newest.
        if (action.updated_at >= known.updated_at) this.store(action);
        return;
      }
      action.fresh = true;
      this.rows.unshift(action);
      this.render();
      if (action.reverses) this.linkReverse(action);
    } catch (e) {
      reportError(e, "A new action could not be loaded");
    }
  }

  /// Reads one action again and shows it (row and, if selected, details).
  async refresh(id) {
    if (!this.rows.some((r) => r.action_id === id)) return;
    try {
      const { action } = await api("GET", "/actions/" + encodeURIComponent(id));
      this.store(action);
    } catch (e) {
      reportError(e, "An action could not be refreshed");
    }
  }

  /// Puts a freshly read action in place of its row (and details, if selected).
  store(action) {
    const i = this.rows.findIndex((r) => r.action_id === action.action_id);
    if (i < 0) return;
    this.rows[i] = action;
    this.replaceRow(action);
    if (action.action_id === this.selectedId) this.renderDetails(action);
  }

  /// A reverse was registered: its original is no longer reversible.
  linkReverse(reverse) {
    const original = this.rows.find((r) => r.action_id === reverse.reverses);
    if (!original || original.reversed_by) return;
    original.reversed_by = reverse.action_id;
    this.replaceRow(original);
    if (original.action_id === this.selectedId) this.renderDetails(original);
  }

  /// Shows the action in the details area; null closes the details area.
  select(id) {
    this.selectedId = id;
    for (const tr of this.tbody.rows) tr.classList.toggle("selected", tr.dataset.actionId === id);
    if (id) this.showDetails(id);
    else this.showEmptyDetails();
  }

  render() {
    const cols = COLUMNS.filter((c) => c.name || canAct());
    clear(
      this.cols,
      cols.map((c) => el("col", { class: c.width })),
    );
    clear(
      this.thead,
      el(
        "tr",
        {},
        cols.map((c) => el("th", { scope: "col" }, c.name)),
      ),
    );
    const rows = this.rows.map((a) => this.row(a));
    for (const a of this.rows) delete a.fresh;
    if (rows.length === 0)
      rows.push(
        el(
          "tr",
          { class: "empty" },
          el(
            "td",
            { colspan: cols.length },
            this.loading ? "Loading…" : "No response actions match the filters.",
          ),
        ),
      );
    replaceRows(this.tbody, rows, "actionId");
    this.more.hidden = !this.next;
    const n = this.rows.length;
    this.status.textContent = this.loading
      ? "Loading…"
      : `${n} action${n === 1 ? "" : "s"} shown${this.next ? ", more available" : ""}`;
  }

  replaceRow(a) {
    const old = this.tbody.querySelector(`tr[data-action-id="${CSS.escape(a.action_id)}"]`);
    if (!old) return;
    const tr = this.row(a);
    tr.tabIndex = old.tabIndex;
    const hadFocus = old.contains(document.activeElement);
    old.replaceWith(tr);
    if (hadFocus) tr.focus();
  }

  row(a) {
    const classes = [a.action_id === this.selectedId ? "selected" : "", a.fresh ? "fresh" : ""];
    return el(
      "tr",
      {
        tabindex: -1,
        class: classes.join(" ").trim(),
        testid: "action-row",
        data: { actionId: a.action_id, state: a.state },
      },
      el("td", {}, truncated(actionName(a.type))),
      el("td", {}, targetLabel(a), el("span", { class: "sub" }, actionTargetRef(a))),
      el("td", {}, stateBadge(a.state)),
      el("td", {}, deviceCell(a.device_id)),
      el("td", {}, truncated(a.incident_id, "mono")),
      el("td", {}, truncated(a.requested_by)),
      el("td", {}, timeEl(a.created_at, true)),
      el("td", {}, timeEl(a.updated_at, true)),
      canAct() ? el("td", { class: "row-buttons" }, this.controls(a)) : null,
    );
  }

  /// Cancel and Reverse, where they apply; nothing at all for operators.
  controls(a) {
    if (!canAct()) return [];
    const out = [];
    if (CANCELLABLE_STATES.has(a.state))
      out.push(
        el(
          "button",
          {
            type: "button",
            class: "btn small",
            testid: "action-cancel",
            on: { click: () => openCancelDialog(a) },
          },
          "Cancel",
        ),
      );
    if (reversible(a))
      out.push(
        el(
          "button",
          {
            type: "button",
            class: "btn small",
            testid: "action-reverse",
            on: { click: () => openReverseDialog(a, (r) => this.linkReverse(r)) },
          },
          "Reverse",
        ),
      );
    return out;
  }

  showEmptyDetails() {
    clear(this.details);
    this.split.classList.remove("has-details");
  }

  async showDetails(id) {
    this.split.classList.add("has-details");
    const row = this.rows.find((r) => r.action_id === id);
    if (row && row.unreadable) {
      this.renderDetails(row);
      return;
    }
    try {
      const { action } = await api("GET", "/actions/" + encodeURIComponent(id));
      if (id !== this.selectedId) return;
      this.renderDetails(action);
    } catch (e) {
      if (id === this.selectedId) reportError(e, "The action could not be loaded");
    }
  }

  renderDetails(a) {
    const head = el(
      "header",
      { class: "details-head" },
      el(
        "div",
        { class: "head-text" },
        el("div", { class: "eyebrow" }, "Response action ", el("span", { class: "mono" }, a.action_id)),
        el("h2", {}, actionName(a.type)),
        el(
          "div",
          { class: "meta-row" },
          stateBadge(a.state),
          el("span", {}, "on ", deviceLabel(a.device_id)),
          el("span", {}, "by ", a.requested_by),
        ),
      ),
      el("div", { class: "head-actions" }, this.controls(a)),
      closeButton("Close details", "details-close", () => this.select(null)),
    );
    const incidentLink = el(
      "button",
      {
        type: "button",
        class: "link mono",
        testid: "action-open-incident",
        on: { click: () => this.onOpenIncident(a.incident_id) },
      },
      a.incident_id,
    );
    clear(
      this.details,
      head,
      a.unreadable ? el("p", { class: "form-error" }, "This action cannot be read: ", a.unreadable) : null,
      el(
        "section",
        { class: "card" },
        summaryList([
          ["Target", targetLabel(a)],
          ["Event", actionTargetRef(a)],
          ["Device", deviceCell(a.device_id)],
          ["Incident", incidentLink],
          ["Comment", a.comment || "—"],
          ["Password confirmed", a.password_confirmed ? "Yes" : "No"],
          ["Created", timeEl(a.created_at)],
          ["Updated", timeEl(a.updated_at)],
          ["Expires", timeEl(a.expires_at)],
          a.reverses ? ["Reverses", a.reverses, true] : null,
          a.reversed_by ? ["Reversed by", a.reversed_by, true] : null,
        ]),
      ),
      paramsSection(a),
      resultSection(a.result),
      transitionsSection(a.transitions || []),
    );
  }

  reset() {
    this.rows = [];
    this.next = null;
    this.selectedId = null;
    this.pending = [];
    this.loading = null;
    this.form.reset();
    clear(this.tbody);
    this.showEmptyDetails();
  }
}

/// What the action acts on: its file or process (monospace), or the whole device.
function targetLabel(a) {
  if (a.unreadable) return el("span", { class: "muted", title: a.unreadable }, "Unreadable");
  const text = actionTargetText(a);
  if (text) return truncated(text, "mono");
  return DEVICE_ACTIONS.has(a.type) ? el("span", {}, "Whole device") : el("span", { class: "muted" }, "—");
}

function paramsSection(a) {
  // argc and arg.N repeat argv, shown as one list.
  const params = Object.entries(a.params || {}).filter(
    ([k, v]) => v !== "" && k !== "argc" && !k.startsWith("arg."),
  );
  if (params.length === 0 && !a.argv) return null;
  return el(
    "section",
    { class: "card" },
    el("h3", { class: "section-title" }, "Parameters"),
    summaryList([
      ...params.map(([k, v]) => [k, String(v), true]),
      a.argv ? ["argv", JSON.stringify(a.argv), true] : null,
    ]),
  );
}

function resultSection(result) {
  if (!result) return null;
  const effect = Object.entries(result.effect || {});
  const output = effect.filter(([k]) => k === "stdout" || k === "stderr");
  return el(
    "section",
    { class: "card", testid: "action-result" },
    el("h3", { class: "section-title" }, "Result"),
    summaryList([
      [
        "Outcome",
        result.ok
          ? el("span", { class: "ok-text" }, "Succeeded")
          : el("span", { class: "error-text" }, "Failed"),
      ],
      result.error ? ["Error", result.error] : null,
      ...effect
        .filter(([k]) => k !== "stdout" && k !== "stderr")
        .map(([k, v]) => [capitalize(k.replace(/_/g, " ")), String(v), true]),
    ]),
    output.map(([k, v]) => [
      el("div", { class: "output-label" }, k),
      el("pre", { class: "output", testid: "action-" + k }, String(v) || "(empty)"),
    ]),
  );
}

function transitionsSection(transitions) {
  return el(
    "section",
    { class: "card" },
    el("h3", { class: "section-title" }, "Transitions"),
    el(
      "table",
      { class: "grid compact", testid: "action-transitions" },
      el("thead", {}, el("tr", {}, el("th", {}, "State"), el("th", {}, "Time"), el("th", {}, "Reason"))),
      el(
        "tbody",
        {},
        transitions.map((t) =>
          el(
            "tr",
            {},
            el("td", {}, stateBadge(t.state)),
            el("td", {}, timeEl(t.time)),
            el("td", { class: "wrap" }, t.reason),
          ),
        ),
      ),
    ),
  );
}
