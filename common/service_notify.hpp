#pragma once

// Tells the service manager (systemd, through $NOTIFY_SOCKET) about the server's
// state: READY=1, WATCHDOG=1, STOPPING=1, STATUS=... One datagram per call, sent
// without waiting: a manager that does not read its socket (a full queue) costs
// that notification, never a thread of the server (the watchdog, or the shutdown).

#include <string>

namespace parry {

/// Sends `state` ("KEY=VALUE" lines) to $NOTIFY_SOCKET (a path, or "@name" for the
/// abstract namespace). False when there is no socket or the datagram was not taken
/// at once; nothing is retried.
bool notify_service(const std::string& state);

} // namespace parry
