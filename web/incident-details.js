// The details area of an incident: summary, device, threat development chain, all
// activity events, the Threat response menu and the event details window.

import { api } from "./api.js";
import { el, clear, closeButton, rowNavigation, ensureRowStop } from "./dom.js";
import { openModal, summaryList, reportError } from "./dialogs.js";
import { ChainView } from "./chain.js";
import { fetchDevice, onDevicesChanged } from "./devices.js";
import { openTriggerDialog } from "./trigger.js";
import { canAct } from "./session.js";
import {
  actionName,
  capitalize,
  eventLabel,
  eventObject,
  eventTypeName,
  severityBadge,
  timeEl,
  truncated,
} from "./format.js";
import { tabs } from "./tabs.js";

/// The target an event is acted on through, with what applies: its "event" entry of
/// available-actions, or for the key event the "detection" entry.
function targetOf(ev, avail) {
  const targets = avail.targets || [];
  const own = targets.find((t) => t.kind === "event" && t.event_id === ev.id);
  const det = ev.key && targets.find((t) => t.kind === "detection");
  const entry = own || det;
  if (!entry) return null;
  return {
    target: entry === own ? { kind: "event", event_id: ev.id } : { kind: "detection" },
    actions: entry.actions || [],
    notActionable: entry.not_actionable || [],
  };
}

/// Field values as shown in the event window.
function fieldValue(key, value) {
  if (typeof value === "boolean") return value ? "Yes" : "No";
  if (Array.isArray(value)) return value.join(", ");
  if ((key === "time" || key === "start_time") && value)
    return el("span", {}, timeEl(value), el("span", { class: "sub mono" }, value));
  return String(value);
}

function fieldLabel(key) {
  return key === "sha256" ? "SHA-256" : capitalize(key.replace(/_/g, " "));
}

const MONO_FIELDS = new Set([
  "id",
  "parent_id",
  "path",
  "sha256",
  "image",
  "cmdline",
  "detail",
  "pid",
  "parent_pid",
]);

/// Every field of an object as label / value rows; nested objects become sections.
function fieldSections(title, obj) {
  const flat = Object.entries(obj).filter(([, v]) => v === null || typeof v !== "object" || Array.isArray(v));
  const nested = Object.entries(obj).filter(
    ([, v]) => v !== null && typeof v === "object" && !Array.isArray(v),
  );
  return [
    el("h3", { class: "section-title" }, title),
    summaryList(flat.map(([k, v]) => [fieldLabel(k), fieldValue(k, v ?? ""), MONO_FIELDS.has(k)])),
    nested.map(([k, v]) => fieldSections(capitalize(k), v)),
  ];
}

export class IncidentDetails {
  /// `onClose()` runs when the user closes the details area.
  constructor(root, { onClose }) {
    this.root = root;
    this.split = root.closest(".split");
    this.onClose = onClose;
    this.seq = 0; // guards against answers of an earlier selection
    this.incident = null;
    onDevicesChanged((d) => this.deviceChanged(d));
    this.showEmpty();
  }

  /// No incident: the list takes the whole width.
  showEmpty() {
    this.seq++;
    this.incident = null;
    clear(this.root);
    this.split.classList.remove("has-details");
  }

  async show(id) {
    const seq = ++this.seq;
    this.split.classList.add("has-details");
    clear(this.root, el("div", { class: "empty-details" }, el("p", {}, "Loading incident…")));
    try {
      const path = "/incidents/" + encodeURIComponent(id);
      const [{ incident }, avail] = await Promise.all([
        api("GET", path),
        api("GET", path + "/available-actions"),
      ]);
      const device = await fetchDevice(incident.device_id).catch((e) => {
        if (e.sessionEnded) throw e;
        return { device_id: incident.device_id };
      });
      if (seq !== this.seq) return;
      this.incident = incident;
      this.avail = avail;
      this.device = device;
      this.render();
    } catch (e) {
      if (seq !== this.seq) return;
      reportError(e, "The incident could not be loaded");
      this.showEmpty();
    }
  }

  render() {
    const inc = this.incident;
    const det = inc.detection || {};
    this.deviceBox = el("section", {
      class: "device-strip",
      "aria-label": "Device",
      testid: "incident-device",
    });
    this.menuSlot = el("div", { class: "head-actions" });
    const chainBox = el("div", { class: "chain-scroll", tabindex: -1 });
    this.chain = new ChainView(chainBox, { onSelect: (ev) => this.openEvent(ev) });
    const events = this.eventsTable();

    clear(
      this.root,
      el(
        "header",
        { class: "details-head" },
        el(
          "div",
          { class: "head-text" },
          el("div", { class: "eyebrow" }, "EDR incident ", el("span", { class: "mono" }, inc.incident_id)),
          el("h2", { title: det.name, testid: "incident-title" }, det.name),
          el(
            "div",
            { class: "meta-row" },
            severityBadge(det.severity),
            el("span", {}, "Status: ", capitalize(inc.status)),
            el("span", {}, timeEl(inc.created_at)),
            el("span", {}, `${inc.event_count} events`),
            det.engine ? el("span", { class: "muted" }, det.engine) : null,
          ),
        ),
        this.menuSlot,
        closeButton("Close details", "details-close", this.onClose),
      ),
      this.deviceBox,
      ...tabs("incident-tabs", [
        {
          id: "chain",
          label: "Threat development chain",
          testid: "tab-chain",
          panel: el(
            "div",
            { class: "chain-panel" },
            el(
              "div",
              { class: "chain-bar" },
              this.legend(),
              el(
                "button",
                {
                  type: "button",
                  class: "btn small",
                  testid: "chain-expand",
                  on: { click: () => this.openChainWindow() },
                },
                "Full window",
              ),
            ),
            chainBox,
          ),
        },
        { id: "all-events", label: "All activity events", testid: "tab-all-events", panel: events },
      ]),
    );
    this.chain.setEvents(inc.events || []);
    this.renderDevice();
    this.renderMenu();
  }

  legend() {
    const item = (cls, text) =>
      el(
        "span",
        { class: "legend-item " + cls },
        el("span", { class: "swatch", "aria-hidden": "true" }),
        text,
      );
    return el(
      "div",
      { class: "legend" },
      item("type-process_started", "Process"),
      item("type-file_created", "File"),
      item("type-network_connection", "Network"),
      item("type-module_loaded", "Module"),
      item("key", "Detection"),
    );
  }

  /// The chain again, in a window nearly as large as the browser's.
  openChainWindow() {
    const box = el("div", { class: "chain-scroll" });
    const inc = this.incident;
    openModal({
      testid: "chain-dialog",
      title: `Threat development chain: ${inc.detection.name}`,
      size: "full",
      body: el("div", { class: "chain-panel" }, this.legend(), box),
    });
    new ChainView(box, { onSelect: (ev) => this.openEvent(ev) }).setEvents(inc.events || []);
  }

  renderDevice() {
    const d = this.device;
    const facts = [d.os, (d.addresses || []).join(", ")].filter(Boolean);
    clear(
      this.deviceBox,
      el(
        "div",
        { class: "device-line" },
        el("span", { class: "device-kicker" }, "Device"),
        el("strong", { class: "device-name", testid: "device-hostname" }, d.hostname || d.device_id),
        el("span", { class: "mono muted" }, d.device_id),
        d.online ? el("span", { class: "dot dot-on" }, "Online") : el("span", { class: "dot" }, "Offline"),
        d.isolated
          ? el("span", { class: "badge isolated", testid: "device-isolated" }, "Isolated")
          : el("span", { class: "muted", testid: "device-isolated" }, "Not isolated"),
      ),
      el(
        "div",
        { class: "device-facts" },
        facts.map((f) => el("span", {}, f)),
        d.last_seen ? el("span", {}, "last seen ", timeEl(d.last_seen, true)) : null,
      ),
    );
  }

  /// The Threat response drop-down: the device's actions and the detection's actions,
  /// only those available-actions lists. Not there at all for operators.
  renderMenu() {
    clear(this.menuSlot);
    if (!canAct()) return;
    const det = (this.avail.targets || []).find((t) => t.kind === "detection");
    const groups = [
      ["Device", this.avail.device_actions || [], { kind: "detection" }],
      ["Detection", (det && det.actions) || [], { kind: "detection" }],
    ].filter(([, types]) => types.length > 0);
    this.menuSlot.append(
      dropdown(
        "Threat response",
        "threat-response",
        groups.map(([label, types, target]) => ({
          label,
          items: types.map((type) => ({
            type,
            label: actionName(type),
            run: () => openTriggerDialog(type, target, this.incident, this.avail),
          })),
        })),
      ),
    );
  }

  eventsTable() {
    const tbody = el("tbody", {});
    for (const ev of this.incident.events || []) {
      tbody.append(
        el(
          "tr",
          { tabindex: -1, testid: "event-row", data: { eventId: ev.id } },
          el("td", {}, timeEl(ev.time, true)),
          el(
            "td",
            {},
            eventTypeName(ev.type),
            ev.key ? el("span", { class: "badge detection-tag" }, "Detection") : null,
          ),
          el("td", {}, truncated(eventObject(ev), "mono")),
          el("td", {}, truncated(ev.detail || "", "mono")),
        ),
      );
    }
    rowNavigation(tbody, (tr) => {
      for (const r of tbody.rows) r.classList.toggle("selected", r === tr);
      const ev = this.incident.events.find((e) => e.id === tr.dataset.eventId);
      if (ev) this.openEvent(ev);
    });
    ensureRowStop(tbody);
    return el(
      "div",
      { class: "table-wrap events-wrap" },
      el(
        "table",
        { class: "grid fixed" },
        el(
          "colgroup",
          {},
          el("col", { class: "w-time" }),
          el("col", { class: "w-event" }),
          el("col"),
          el("col", { class: "w-detail" }),
        ),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", {}, "Time"),
            el("th", {}, "Type"),
            el("th", {}, "File / process"),
            el("th", {}, "Detail"),
          ),
        ),
        tbody,
      ),
    );
  }

  /// The event details window: every field, and one button per action valid for it.
  openEvent(ev) {
    this.chain.select(ev.id);
    const t = targetOf(ev, this.avail);
    const actions =
      t && canAct() && t.actions.length > 0
        ? el(
            "div",
            { class: "event-actions" },
            t.actions.map((type) =>
              el(
                "button",
                {
                  type: "button",
                  class: "btn",
                  testid: "event-action",
                  data: { actionType: type },
                  on: { click: () => openTriggerDialog(type, t.target, this.incident, this.avail) },
                },
                actionName(type),
              ),
            ),
          )
        : null;
    const reasons =
      t && t.notActionable.length > 0
        ? el(
            "ul",
            { class: "reasons", testid: "not-actionable" },
            t.notActionable.map((n) => el("li", {}, el("strong", {}, actionName(n.type) + ": "), n.reason)),
          )
        : null;
    const responses =
      actions || reasons
        ? [el("h3", { class: "section-title" }, "Response actions"), actions, reasons]
        : t && canAct()
          ? el("p", { class: "muted" }, "No response action applies to this event.")
          : null;
    const dialog = openModal({
      testid: "event-dialog",
      title: `${eventTypeName(ev.type)}: ${eventLabel(ev) || ev.id}${ev.key ? " (Detection)" : ""}`,
      size: "wide",
      body: [fieldSections("Event", ev), responses],
    });
    const firstAction = dialog.querySelector("[data-testid=event-action]");
    if (firstAction) firstAction.focus();
  }

  deviceChanged(d) {
    if (!d || !this.incident || d.device_id !== this.incident.device_id) return;
    const wasIsolated = this.device.isolated;
    this.device = { ...this.device, ...d };
    this.renderDevice();
    if (wasIsolated !== d.isolated) this.refreshActions();
  }

  /// Isolation changed: what the device offers (isolate / release) changed with it.
  async refreshActions() {
    const inc = this.incident;
    try {
      const avail = await api("GET", `/incidents/${encodeURIComponent(inc.incident_id)}/available-actions`);
      if (this.incident !== inc) return;
      this.avail = avail;
      this.renderMenu();
    } catch (e) {
      reportError(e, "Available actions could not be loaded");
    }
  }
}

/// A menu button: groups of items, keyboard operable (arrows, Home / End, Escape).
function dropdown(label, testid, groups) {
  const button = el(
    "button",
    { type: "button", class: "btn primary", testid, "aria-haspopup": "menu", "aria-expanded": "false" },
    label,
    el("span", { class: "caret", "aria-hidden": "true" }, "▾"),
  );
  const menu = el("div", { class: "menu", role: "menu", hidden: true, "aria-label": label });
  if (groups.length === 0) {
    button.disabled = true;
    button.title = "No response action applies";
  }
  for (const g of groups) {
    menu.append(el("div", { class: "menu-group", role: "presentation" }, g.label));
    for (const item of g.items) {
      menu.append(
        el(
          "button",
          {
            type: "button",
            role: "menuitem",
            class: "menu-item",
            tabindex: -1,
            testid: testid + "-item",
            data: { actionType: item.type },
            on: {
              click: () => {
                close(true); // the dialog gives the focus back to the button
                item.run();
              },
            },
          },
          item.label,
        ),
      );
    }
  }
  const items = () => [...menu.querySelectorAll("[role=menuitem]")];
  const onOutside = (e) => {
    if (!wrap.contains(e.target)) close();
  };
  function open() {
    menu.hidden = false;
    button.setAttribute("aria-expanded", "true");
    items()[0].focus();
    document.addEventListener("mousedown", onOutside);
  }
  function close(refocus) {
    menu.hidden = true;
    button.setAttribute("aria-expanded", "false");
    document.removeEventListener("mousedown", onOutside);
    if (refocus) button.focus();
  }
  button.addEventListener("click", () => (menu.hidden ? open() : close()));
  button.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" && menu.hidden) {
      e.preventDefault();
      open();
    }
  });
  menu.addEventListener("keydown", (e) => {
    const list = items();
    const i = list.indexOf(document.activeElement);
    const moves = {
      ArrowDown: (i + 1) % list.length,
      ArrowUp: (i - 1 + list.length) % list.length,
      Home: 0,
      End: list.length - 1,
    };
    if (e.key in moves) {
      e.preventDefault();
      list[moves[e.key]].focus();
    } else if (e.key === "Escape") {
      e.preventDefault();
      close(true);
    } else if (e.key === "Tab") close();
  });
  const wrap = el("div", { class: "dropdown" }, button, menu);
  return wrap;
}
