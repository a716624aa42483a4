// Events and incidents: the list of EDR incidents, newest first, with its filters,
// paging and live additions.

import { page } from "./api.js";
import { el, clear, rowNavigation, replaceRows } from "./dom.js";
import { reportError } from "./dialogs.js";
import { deviceCell, resolveDeviceInput } from "./devices.js";
import {
  isoFromUs,
  severityBadge,
  timeEl,
  truncated,
  utcFromLocalInput,
  utcFromMs,
  capitalize,
} from "./format.js";

const PAGE_SIZE = 100;

/// The Period filter's presets, in seconds back from now.
const PERIODS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

/// Whether a live incident belongs in the list under the filters.
function matches(incident, f) {
  const t = Date.parse(incident.created_at);
  return (
    (!f.device_id || incident.device_id === f.device_id) &&
    (!f.severity || incident.detection.severity === f.severity) &&
    (!f.status || incident.status === f.status) &&
    (!f.since || t >= Date.parse(f.since)) &&
    (!f.until || t <= Date.parse(f.until))
  );
}

/// An incident.created event's data as a list row.
function summaryFromEvent(d) {
  return {
    incident_id: d.incident_id,
    device_id: d.device_id,
    status: "new",
    detection: { name: d.detection, severity: d.severity },
    event_count: d.events,
    created_at: isoFromUs(d.created_at),
  };
}

export class IncidentList {
  /// `onSelect(incidentId)` opens an incident in the details area.
  constructor({ onSelect }) {
    this.onSelect = onSelect;
    this.form = document.getElementById("incident-filters");
    this.tbody = document.getElementById("incident-rows");
    this.more = document.getElementById("incident-more");
    this.status = document.getElementById("incident-status");
    this.range = document.getElementById("incident-range");
    this.rows = [];
    this.next = null;
    this.loading = null; // the load in flight
    this.pending = []; // live incidents that arrived during a load
    this.selectedId = null;
    this.filters = {};

    rowNavigation(this.tbody, (tr) => this.select(tr.dataset.incidentId));
    this.form.addEventListener("change", () => this.load());
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.load();
    });
    document.getElementById("incident-filters-reset").addEventListener("click", () => {
      this.form.reset();
      this.load();
    });
    this.more.addEventListener("click", () => this.loadMore());
  }

  readFilters() {
    const v = (name) => this.form.elements[name].value;
    const period = v("period");
    const custom = period === "custom";
    this.range.hidden = !custom;
    return {
      device_id: resolveDeviceInput(v("device")),
      severity: v("severity"),
      status: v("status"),
      since: custom
        ? utcFromLocalInput(v("since"))
        : PERIODS[period]
          ? utcFromMs(Date.now() - PERIODS[period] * 1000)
          : "",
      until: custom ? utcFromLocalInput(v("until")) : "",
    };
  }

  /// Loads the first page again (filters changed, resync, sign-in).
  async load() {
    this.filters = this.readFilters();
    const run = page("/incidents", "incidents", { ...this.filters, limit: PAGE_SIZE });
    this.loading = run;
    this.status.textContent = "Loading…";
    try {
      const { rows, next } = await run;
      if (this.loading !== run) return; // a newer load took over
      this.rows = rows;
      this.next = next;
    } catch (e) {
      if (this.loading !== run) return;
      this.rows = [];
      this.next = null;
      reportError(e, "Incidents could not be loaded");
    }
    this.loading = null;
    const late = this.pending;
    this.pending = [];
    late.forEach((d) => this.add(d));
    this.render();
  }

  async loadMore() {
    if (!this.next || this.loading) return;
    this.more.disabled = true;
    try {
      const { rows, next } = await page(
        "/incidents",
        "incidents",
        { ...this.filters, limit: PAGE_SIZE },
        this.next,
      );
      const have = new Set(this.rows.map((r) => r.incident_id));
      this.rows.push(...rows.filter((r) => !have.has(r.incident_id)));
      this.next = next;
      this.render();
    } catch (e) {
      reportError(e, "More incidents could not be loaded");
    } finally {
      this.more.disabled = false;
    }
  }

  /// An incident.created event.
  applyEvent(data) {
    if (this.loading) this.pending.push(data);
    else if (this.add(data)) this.render();
  }

  add(data) {
    const inc = summaryFromEvent(data);
    if (!matches(inc, this.filters) || this.rows.some((r) => r.incident_id === inc.incident_id)) return false;
    inc.fresh = true;
    this.rows.unshift(inc);
    return true;
  }

  /// Opens the incident in the details area; null closes the details area.
  select(id) {
    this.selectedId = id;
    for (const tr of this.tbody.rows) tr.classList.toggle("selected", tr.dataset.incidentId === id);
    this.onSelect(id);
  }

  render() {
    const rows = this.rows.map((inc) => this.row(inc));
    for (const inc of this.rows) delete inc.fresh;
    if (rows.length === 0)
      rows.push(
        el(
          "tr",
          { class: "empty" },
          el("td", { colspan: 7 }, this.loading ? "Loading…" : "No incidents match the filters."),
        ),
      );
    replaceRows(this.tbody, rows, "incidentId");
    this.more.hidden = !this.next;
    const n = this.rows.length;
    this.status.textContent = this.loading
      ? "Loading…"
      : `${n} incident${n === 1 ? "" : "s"} shown${this.next ? ", more available" : ""}`;
  }

  row(inc) {
    const det = inc.detection || {};
    const classes = [inc.incident_id === this.selectedId ? "selected" : "", inc.fresh ? "fresh" : ""];
    return el(
      "tr",
      {
        tabindex: -1,
        class: classes.join(" ").trim(),
        testid: "incident-row",
        data: { incidentId: inc.incident_id },
      },
      el("td", {}, timeEl(inc.created_at, true)),
      el("td", {}, deviceCell(inc.device_id)),
      el("td", { class: "muted small" }, "EDR incident"),
      el("td", {}, truncated(det.name || "")),
      el("td", {}, severityBadge(det.severity)),
      el("td", {}, capitalize(inc.status)),
      el("td", { class: "num" }, String(inc.event_count)),
    );
  }

  /// Forgets everything (sign-out).
  reset() {
    this.rows = [];
    this.next = null;
    this.selectedId = null;
    this.pending = [];
    this.loading = null;
    this.form.reset();
    clear(this.tbody);
  }
}
