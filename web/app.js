// The console's entry point: sign-in and sign-out, the top bar, the sections, and the
// wiring of the live stream to the views.

import { api, onSessionEnded } from "./api.js";
import { el } from "./dom.js";
import { reportError } from "./dialogs.js";
import { applyDeviceEvent, loadDevices, onDevicesChanged } from "./devices.js";
import { ACTION_STATES, INCIDENT_STATUSES, SEVERITIES, capitalize } from "./format.js";
import { IncidentList } from "./incidents.js";
import { IncidentDetails } from "./incident-details.js";
import { ActionList } from "./actions.js";
import { UsersPage } from "./users.js";
import { LiveStream } from "./live.js";
import { wireTabs } from "./tabs.js";
import { session, setSession, clearSession, isAdministrator } from "./session.js";

const byId = (id) => document.getElementById(id);

let incidents, details, actions, users, live, showEventsTab;
let synced = false; // the lists were loaded since sign-in

// -- sign-in ------------------------------------------------------------------------

function showLogin(notice) {
  byId("app-view").hidden = true;
  byId("boot").hidden = true;
  byId("login-view").hidden = false;
  const box = byId("login-notice");
  box.textContent = notice || "";
  box.hidden = !notice;
  byId("login-error").hidden = true;
  byId("login-password").value = "";
  byId("login-username").focus();
}

function loginError(text) {
  const box = byId("login-error");
  box.textContent = text;
  box.hidden = false;
}

async function submitLogin(e) {
  e.preventDefault();
  const username = byId("login-username").value.trim();
  const password = byId("login-password").value;
  if (!username || !password) return loginError("Enter your user name and password.");
  const button = byId("login-submit");
  button.disabled = true;
  try {
    const login = await api("POST", "/login", { body: { username, password }, allow401: true });
    setSession({ ...login, password_required: [] }); // the CSRF token, until /session says more
    enter(await api("GET", "/session"));
  } catch (err) {
    if (err.status === 401 && /disabled/i.test(err.message))
      loginError("This account is disabled. Ask an administrator.");
    else if (err.status === 401) loginError("Wrong user name or password.");
    else if (err.status === 429)
      loginError(`Too many failed attempts. Locked, try again in ${err.retryAfter ?? "a few"} s.`);
    else loginError(err.message);
    byId("login-password").value = "";
    byId("login-password").focus();
  } finally {
    button.disabled = false;
  }
}

// -- the signed-in console ----------------------------------------------------------

function enter(sessionData) {
  setSession(sessionData);
  byId("login-view").hidden = true;
  byId("boot").hidden = true;
  byId("app-view").hidden = false;
  byId("session-user").textContent = session.user.username;
  byId("session-role").textContent = capitalize(session.user.role.replace(/_/g, " "));
  const nav = byId("nav");
  if (isAdministrator() && !byId("nav-users"))
    nav.append(el("a", { href: "#users", id: "nav-users", class: "nav-link", testid: "nav-users" }, "Users"));
  route();
  byId(location.hash === "#users" && isAdministrator() ? "user-new" : "tab-incidents").focus();
  synced = false;
  live.start();
  // If the stream does not say hello soon, load without it.
  setTimeout(() => {
    if (session.user && !synced) syncAll();
  }, 2000);
}

/// Leaves the console: stream closed, state forgotten, dialogs closed.
function leave() {
  live.stop();
  clearSession();
  for (const d of document.querySelectorAll("dialog")) d.close();
  const nav = byId("nav-users");
  if (nav) nav.remove();
  incidents.reset();
  details.showEmpty();
  actions.reset();
  users.reset();
}

function sessionEnded() {
  if (!session.user) return;
  leave();
  showLogin("Your session ended; sign in again.");
}

async function logout() {
  try {
    await api("POST", "/logout", { allow401: true });
  } catch {
    // signed out here either way
  }
  leave();
  showLogin("You signed out.");
}

/// (Re)loads everything the lists show: at sign-in, and after a resync (events were
/// missed, e.g. across a server restart).
function syncAll() {
  synced = true;
  loadDevices().catch((e) => reportError(e, "Devices could not be loaded"));
  incidents.load();
  actions.load();
}

function onLiveEvent(topic, data) {
  if (topic === "incident.created") incidents.applyEvent(data);
  else if (topic === "device.updated") applyDeviceEvent(data);
  else if (topic.startsWith("action.")) actions.applyEvent(data);
}

const LIVE_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting",
  stopped: "Offline",
};

function onLiveStatus(state, delayMs) {
  const box = byId("live-status");
  box.dataset.state = state;
  const text =
    state === "reconnecting" ? `Reconnecting in ${Math.round(delayMs / 1000)} s` : LIVE_TEXT[state];
  box.querySelector(".live-text").textContent = text;
  box.title = state === "live" ? "Live updates are on" : `Live updates: ${text.toLowerCase()}`;
  // A stream that keeps failing may mean the session is gone: ask once per attempt.
  if (state === "reconnecting") api("GET", "/session").catch(() => {});
}

// -- sections -----------------------------------------------------------------------

function route() {
  const showUsers = location.hash === "#users" && isAdministrator();
  byId("view-events").hidden = showUsers;
  byId("view-users").hidden = !showUsers;
  for (const a of document.querySelectorAll(".nav-link")) {
    if (a.getAttribute("href") === (showUsers ? "#users" : "#events")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (showUsers) users.load();
}

function openIncident(id) {
  showEventsTab(byId("tab-incidents"));
  incidents.select(id);
}

function fillSelect(select, values) {
  for (const v of values) select.append(el("option", { value: v }, capitalize(v)));
}

function boot() {
  fillSelect(byId("incident-filters").elements.severity, SEVERITIES);
  fillSelect(byId("incident-filters").elements.status, INCIDENT_STATUSES);
  fillSelect(byId("action-filters").elements.state, ACTION_STATES);

  details = new IncidentDetails(byId("incident-details"), { onClose: () => incidents.select(null) });
  incidents = new IncidentList({ onSelect: (id) => (id ? details.show(id) : details.showEmpty()) });
  actions = new ActionList({ onOpenIncident: openIncident });
  users = new UsersPage();
  live = new LiveStream({
    onEvent: onLiveEvent,
    onSync: syncAll,
    onStatus: onLiveStatus,
    onSessionEnded: sessionEnded,
  });
  showEventsTab = wireTabs(byId("events-tabs"));
  onDevicesChanged((d, renamed) => {
    // Hostnames learnt or changed: the lists show them.
    if (renamed) {
      incidents.render();
      actions.render();
    }
  });
  onSessionEnded(sessionEnded);

  byId("login-form").addEventListener("submit", submitLogin);
  byId("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);

  api("GET", "/session", { allow401: true })
    .then(enter)
    .catch((e) => showLogin(e.status === 401 ? "" : e.message));
}

boot();
