// Who is signed in: filled from GET /api/v1/session or POST /api/v1/login, emptied on
// sign-out. Modules read it; only app.js writes it.

export const session = {
  user: null, // {username, role}
  csrfToken: "",
  idleTimeoutS: 0,
  passwordRequired: new Set(), // action types that need the password again
};

export function setSession(data) {
  session.user = data.user;
  session.csrfToken = data.csrf_token;
  session.idleTimeoutS = data.idle_timeout_s || 0;
  session.passwordRequired = new Set(data.password_required || []);
}

export function clearSession() {
  session.user = null;
  session.csrfToken = "";
  session.idleTimeoutS = 0;
  session.passwordRequired = new Set();
}

/// Administrators and security officers trigger, cancel and reverse; operators only look.
export function canAct() {
  return !!session.user && session.user.role !== "operator";
}

export function isAdministrator() {
  return !!session.user && session.user.role === "administrator";
}
