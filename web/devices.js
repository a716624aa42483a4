// What the console knows about devices: loaded from GET /devices, kept current by
// device.updated events, and offered to the device filters.

import { api, page } from "./api.js";
import { el, clear } from "./dom.js";
import { isoFromUs } from "./format.js";

const devices = new Map(); // device_id -> device
const listeners = new Set();

/// `fn(device, renamed)` runs after a device changed, `fn(null, true)` after the whole
/// list loaded; `renamed` says hostnames shown elsewhere may have changed.
export function onDevicesChanged(fn) {
  listeners.add(fn);
}

function changed(device, renamed) {
  for (const fn of listeners) fn(device, renamed);
}

/// Loads every device, page after page.
export async function loadDevices() {
  devices.clear();
  let cursor;
  do {
    const { rows, next } = await page("/devices", "devices", { limit: 5000 }, cursor);
    for (const d of rows) devices.set(d.device_id, d);
    cursor = next;
  } while (cursor);
  refreshDatalist();
  changed(null, true);
}

/// The device, fresh from the server (for the details area).
export async function fetchDevice(id) {
  const { device } = await api("GET", "/devices/" + encodeURIComponent(id));
  devices.set(id, device);
  return device;
}

/// Hostname when known, else the id.
export function deviceLabel(id) {
  const d = devices.get(id);
  return d && d.hostname ? d.hostname : id;
}

/// A device as shown in lists: the hostname (the id in its title), else the id.
export function deviceCell(id) {
  const d = devices.get(id);
  if (!d || !d.hostname) return el("span", { class: "mono", title: id }, id);
  return el("span", { class: "device-cell", title: `${d.hostname} (${id})` }, d.hostname);
}

/// A device.updated event.
export function applyDeviceEvent(data) {
  const old = devices.get(data.device_id);
  const d = { ...(old || { device_id: data.device_id }) };
  for (const k of ["hostname", "online", "isolated"]) if (k in data) d[k] = data[k];
  if (data.last_seen) d.last_seen = isoFromUs(data.last_seen);
  devices.set(data.device_id, d);
  const renamed = !old || old.hostname !== d.hostname;
  if (renamed) refreshDatalist();
  changed(d, renamed);
}

/// The id a device filter's text stands for: an id as typed, or a known hostname.
export function resolveDeviceInput(text) {
  const t = text.trim();
  if (!t || devices.has(t)) return t;
  for (const d of devices.values()) if (d.hostname === t) return d.device_id;
  return t;
}

/// The <datalist id="device-options"> the device filters suggest from.
function refreshDatalist() {
  const list = document.getElementById("device-options");
  clear(list);
  const sorted = [...devices.values()].sort((a, b) =>
    (a.hostname || a.device_id).localeCompare(b.hostname || b.device_id),
  );
  for (const d of sorted) list.append(el("option", { value: d.device_id }, d.hostname || d.device_id));
}
