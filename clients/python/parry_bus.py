"""Parry integrator bus client.

A small client for the integrator endpoints of ``parryd`` (docs/bus-protocol.md,
"Integrators"): a CURVE DEALER on the requests endpoint (``bus_integrator_endpoint``)
that carries REST calls (docs/rest-api.md) and ``snapshot`` requests, and a CURVE SUB
on the events endpoint (``bus_events_endpoint``) that receives published events.

Written for Debian 12: python3-zmq (pyzmq 24, libzmq 4.3 with CURVE) and
python3-msgpack (1.0.3); the standard library otherwise.

Quick start::

    import parry_bus
    pub, sec = parry_bus.load_key_file("integrator.keys")
    with parry_bus.IntegratorClient("tcp://127.0.0.1:7402", "tcp://127.0.0.1:7403",
                                    server_key, pub, sec) as client:
        client.snapshot(baseline=True)          # gaps are detectable from here on
        status, body = client.request("GET", "/api/v1/incidents?limit=1")
        event = client.next_event(timeout=5.0)  # Event or None
        if event is not None and (event.gap or event.restart):
            client.resync()

Robustness rules of this module:

* every wait is bounded by a timeout (``request``, ``snapshot``, ``next_event``,
  ``wait_connected``, ``resync``);
* everything read from the wire is validated (frame count, msgpack, key types);
  a message that fails is skipped and counted in ``client.counters``, never raised;
* per the protocol's versioning rules, unknown keys are ignored, missing keys get
  their default (0, ``""``, ``False``) and unknown event topics are skipped.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import re
import stat
import time

import msgpack
import zmq
import zmq.utils.monitor

__all__ = [
    "PROTOCOL_VERSION", "FAMILIES", "FINAL_ACTION_STATES",
    "ParryBusError", "RequestTimeout", "Rejected", "MalformedReply", "KeyFileError",
    "Event", "ResyncResult", "IntegratorClient",
    "generate_keypair", "is_z85_key", "load_key_file", "write_key_file",
]

#: Protocol version this client speaks (header ``v``).
PROTOCOL_VERSION = 1

#: Event families and the REST list that holds their current state
#: (path, key of the array in the answer).
FAMILIES = {
    "incident": ("/api/v1/incidents", "incidents"),
    "action": ("/api/v1/actions", "actions"),
    "device": ("/api/v1/devices", "devices"),
}

#: Action states after which nothing changes any more (docs/rest-api.md, "States").
FINAL_ACTION_STATES = frozenset({"completed", "failed", "expired", "cancelled", "reverted"})

#: Largest frame this client decodes; larger ones are skipped and counted.  The
#: server refuses request frames over 262,144 bytes; replies can carry a 4 MiB page
#: of JSON plus framing, so the bound here is generous.
MAX_FRAME_BYTES = 16 * 1024 * 1024

_U64_MAX = 2 ** 64 - 1
_I64_MIN, _I64_MAX = -(2 ** 63), 2 ** 63 - 1
_Z85_RE = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
_TOPIC_RE = re.compile(r"^([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)$")


# --------------------------------------------------------------------------- errors

class ParryBusError(Exception):
    """Base class of every error this module raises."""


class RequestTimeout(ParryBusError):
    """No answer to a request within its timeout.

    ``handshake_refused`` is the ZAP status code (e.g. 400) when the server refused
    the CURVE handshake of the requests connection (an unregistered or revoked key,
    or the wrong server key), else ``None``.  The protocol never answers a refused
    handshake, so a timeout is what the caller sees either way: at once (``timeout``
    0.0) when the refusal came before the request could be sent.
    """

    def __init__(self, msg_id, timeout, handshake_refused=None):
        self.msg_id = msg_id
        self.timeout = timeout
        self.handshake_refused = handshake_refused
        text = "no reply to message %d within %.1f s" % (msg_id, timeout)
        if handshake_refused is not None:
            text += " (the server refused the CURVE handshake, status %s: is the key registered?)" \
                % handshake_refused
        super().__init__(text)


class Rejected(ParryBusError):
    """The server answered ``rejected`` (docs/bus-protocol.md, "`rejected`").

    Attributes mirror the body: ``msg_id``, ``type``, ``limit`` (``""`` for a message
    that is simply invalid), ``value``, ``reason`` and ``retry_after_ms`` (> 0: a
    capacity limit, the same message may be sent again after that long; 0: sending
    it again unchanged fails again).
    """

    def __init__(self, msg_id, type_, limit, value, reason, retry_after_ms):
        self.msg_id = msg_id
        self.type = type_
        self.limit = limit
        self.value = value
        self.reason = reason
        self.retry_after_ms = retry_after_ms
        text = "server rejected %s message %d: %s" % (type_ or "?", msg_id, reason or "(no reason)")
        if limit:
            text += " [limit %s = %d]" % (limit, value)
        if retry_after_ms:
            text += " (retry after %d ms)" % retry_after_ms
        super().__init__(text)

    @property
    def retryable(self):
        """True when the same message may be sent again later."""
        return self.retry_after_ms > 0


class MalformedReply(ParryBusError):
    """The reply to this request arrived but could not be used (its ``body`` is not
    JSON, or a ``snapshot`` answer lacks the documented shape).  ``status`` and
    ``text`` hold what arrived."""

    def __init__(self, msg_id, status, text, why):
        self.msg_id = msg_id
        self.status = status
        self.text = text
        super().__init__("reply to message %d (status %s) is unusable: %s" % (msg_id, status, why))


class KeyFileError(ParryBusError):
    """A key file is missing, readable by others, or not in the expected format."""


# --------------------------------------------------------------------------- keys

def generate_keypair():
    """Make a new CURVE key pair for an integrator.

    Returns ``(public_z85, secret_z85)`` as ``str`` (40 characters each).  Register
    the public half with ``POST /api/v1/integrators`` (or ``parryctl integrator
    add``); keep the secret half private.
    """
    if not zmq.has("curve"):
        raise ParryBusError("this libzmq has no CURVE support")
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def is_z85_key(text):
    """True when ``text`` is a 40-character Z85 string (the form of a CURVE key)."""
    return isinstance(text, str) and bool(_Z85_RE.match(text))


def write_key_file(path, public, secret):
    """Write an integrator key file (mode 0600, created exclusively).

    Format (one ``name value`` pair per line, ``#`` comment lines allowed)::

        public <40 Z85 characters>
        secret <40 Z85 characters>
    """
    if not (is_z85_key(public) and is_z85_key(secret)):
        raise KeyFileError("keys must be 40 Z85 characters")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, ("# Parry integrator CURVE key pair (Z85)\npublic %s\nsecret %s\n"
                      % (public, secret)).encode("ascii"))
    finally:
        os.close(fd)


def load_key_file(path):
    """Read an integrator key file written as :func:`write_key_file` describes.

    Refuses a file that group or others may access (``mode & 0o077`` must be 0), that
    is not a regular file, or that is over 64 KiB.  Returns ``(public, secret)``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise KeyFileError("cannot open key file %s: %s" % (path, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError("key file %s is not a regular file" % path)
        if st.st_mode & 0o077:
            raise KeyFileError("key file %s is mode %04o; it must not be accessible by group "
                               "or others (chmod 600)" % (path, stat.S_IMODE(st.st_mode)))
        if st.st_size > 65536:
            raise KeyFileError("key file %s is too large" % path)
        data = os.read(fd, 65537)
    finally:
        os.close(fd)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError("key file %s is not ASCII" % path) from None
    keys = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("public", "secret"):
            raise KeyFileError("key file %s line %d: expected 'public Z85' or 'secret Z85'"
                               % (path, number))
        if not is_z85_key(parts[1]):
            raise KeyFileError("key file %s line %d: %s key is not 40 Z85 characters"
                               % (path, number, parts[0]))
        if parts[0] in keys:
            raise KeyFileError("key file %s: %s key given twice" % (path, parts[0]))
        keys[parts[0]] = parts[1]
    if set(keys) != {"public", "secret"}:
        raise KeyFileError("key file %s must hold both a public and a secret key" % path)
    return keys["public"], keys["secret"]


# --------------------------------------------------------------------------- validation

def _is_int(x):
    return type(x) is int and _I64_MIN <= x <= _I64_MAX


def _is_uint(x):
    return type(x) is int and 0 <= x <= _U64_MAX


def _is_str(x):
    return type(x) is str


def _is_bool(x):
    return type(x) is bool


# header key -> (check, default); docs/bus-protocol.md, header description.
_HEADER_SCHEMA = {
    "v": (_is_int, 0),
    "type": (_is_str, ""),
    "msg_id": (_is_uint, 0),
    "device_id": (_is_str, ""),
    "seq": (_is_uint, 0),
    "time": (_is_int, 0),
}

_REPLY_SCHEMA = {
    "request_id": (_is_uint, 0),
    "status": (lambda x: _is_int(x) and -2 ** 31 <= x < 2 ** 31, 0),
    "body": (_is_str, ""),
}

_REJECTED_SCHEMA = {
    "msg_id": (_is_uint, 0),
    "type": (_is_str, ""),
    "limit": (_is_str, ""),
    "value": (_is_uint, 0),
    "reason": (_is_str, ""),
    "retry_after_ms": (lambda x: _is_uint(x) and x < 2 ** 32, 0),
}

# Event bodies by family (docs/bus-protocol.md, "Events").
_EVENT_SCHEMAS = {
    "incident": {
        "incident_id": (_is_str, ""), "device_id": (_is_str, ""), "detection": (_is_str, ""),
        "severity": (_is_str, ""), "created_at": (_is_int, 0),
        "events": (lambda x: _is_uint(x) and x < 2 ** 32, 0),
    },
    "action": {
        "action_id": (_is_str, ""), "type": (_is_str, ""), "state": (_is_str, ""),
        "device_id": (_is_str, ""), "incident_id": (_is_str, ""), "requested_by": (_is_str, ""),
        "updated_at": (_is_int, 0), "result_ok": (_is_bool, False), "result_error": (_is_str, ""),
    },
    "device": {
        "device_id": (_is_str, ""), "hostname": (_is_str, ""), "online": (_is_bool, False),
        "isolated": (_is_bool, False), "last_seen": (_is_int, 0),
    },
}


def _unpack_map(frame):
    """Decode one msgpack frame that must be a map; None when it is anything else."""
    if len(frame) > MAX_FRAME_BYTES:
        return None
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception:  # noqa: BLE001 - any decoder failure means "malformed"
        return None
    return obj if isinstance(obj, dict) else None


def _apply_schema(obj, schema):
    """Check the known keys' types and fill in defaults for missing ones.

    Returns a new dict (unknown keys kept as they are) or None when a known key has
    the wrong type.
    """
    out = dict(obj)
    for key, (check, default) in schema.items():
        if key in obj:
            if not check(obj[key]):
                return None
        else:
            out[key] = default
    return out


def _parse_header(frame):
    raw = _unpack_map(frame)
    if raw is None:
        return None
    header = _apply_schema(raw, _HEADER_SCHEMA)
    if header is None:
        return None
    # A header without "v" is taken as version 1 (the event header description in
    # the docs does not list "v"); an explicit v outside 1..PROTOCOL_VERSION is
    # refused, as the server refuses it (docs, "Versioning").
    v = header["v"] if "v" in raw else PROTOCOL_VERSION
    if not 1 <= v <= PROTOCOL_VERSION:
        return None
    return header


def _now_us():
    return time.time_ns() // 1000


# --------------------------------------------------------------------------- events

class Event:
    """One event from the events endpoint.

    Unpacks as ``topic, seq, body = event``.  Attributes:

    ``topic``   ``"<family>.<kind>"``, e.g. ``"action.completed"``
    ``family``  ``"incident"``, ``"action"`` or ``"device"``
    ``kind``    the part after the dot
    ``seq``     the event's number in its family (from 1 since parryd started)
    ``time``    µs since the epoch when it was published
    ``body``    dict, validated; documented keys always present (defaults filled in)
    ``gap``     True when events of this family were lost just before this one
    ``missed``  how many were lost (``seq - last - 1``) when ``gap``
    ``restart`` True when ``seq`` went back: parryd restarted (or the events
                connection was re-established to a new server)
    ``first``   True for the first event of its family seen without a baseline
                (no snapshot was taken), so a gap before it cannot be known

    After ``gap`` or ``restart`` the caller's view of that family is stale:
    call :meth:`IntegratorClient.resync` (or re-read what it follows).
    """

    __slots__ = ("topic", "family", "kind", "seq", "time", "body",
                 "gap", "missed", "restart", "first")

    def __init__(self, topic, family, kind, seq, time_us, body):
        self.topic, self.family, self.kind = topic, family, kind
        self.seq, self.time, self.body = seq, time_us, body
        self.gap, self.missed, self.restart, self.first = False, 0, False, False

    def __iter__(self):
        return iter((self.topic, self.seq, self.body))

    @property
    def lost(self):
        """True when the caller should resynchronise (``gap`` or ``restart``)."""
        return self.gap or self.restart

    def __repr__(self):
        flags = "".join((" gap(%d)" % self.missed if self.gap else "",
                         " restart" if self.restart else "", " first" if self.first else ""))
        return "<Event %s seq=%d%s %r>" % (self.topic, self.seq, flags, self.body)


class ResyncResult:
    """What :meth:`IntegratorClient.resync` read.

    ``seq``: the snapshot, family -> last published seq S.  ``state``: family -> list
    of the current objects read over REST (incidents, actions, devices; ``None`` for
    a family whose state was not read).  Events with ``seq`` > S that follow from
    ``next_event`` are to be applied on top of this state.
    """

    def __init__(self, seq, state):
        self.seq = seq
        self.state = state

    def __repr__(self):
        return "<ResyncResult seq=%r rows=%r>" % (
            self.seq, {f: (len(v) if v is not None else None) for f, v in self.state.items()})


# --------------------------------------------------------------------------- client

class IntegratorClient:
    """A connection to parryd's integrator endpoints, identified by a CURVE key pair.

    Parameters:

    ``requests_endpoint``  e.g. ``"tcp://127.0.0.1:7402"`` (``bus_integrator_endpoint``)
    ``events_endpoint``    e.g. ``"tcp://127.0.0.1:7403"`` (``bus_events_endpoint``);
                           ``None`` for a client that only makes requests
    ``server_key``         the server's CURVE public key, Z85 (``parryd`` prints it as
                           ``server key``; ``<data_dir>/keys/curve.pub``)
    ``public_key``, ``secret_key``  the integrator's own key pair, Z85; the public half
                           must be registered (``POST /api/v1/integrators``)
    ``subscribe``          topic prefixes: ``("",)`` for everything, or e.g.
                           ``("action.", "incident.")``
    ``on_gap``             optional callable ``on_gap(event)`` called for each event
                           that reveals lost events (``event.gap`` or ``event.restart``)
    ``context``            a ``zmq.Context`` to use (default: the process's instance)
    ``pending_limit``      events held back during :meth:`resync` at most (oldest
                           dropped beyond; the drop shows up as a gap)

    The client is not thread-safe: use it from one thread.  Counters of what was
    skipped or seen are in :attr:`counters`.  :meth:`close_events` and
    :meth:`reopen_events` drop and remake the events connection while keeping the
    sequence memory, so what was published in between shows up as a gap.
    """

    def __init__(self, requests_endpoint, events_endpoint, server_key, public_key, secret_key,
                 subscribe=("",), on_gap=None, context=None, pending_limit=100000):
        for name, key in (("server_key", server_key), ("public_key", public_key),
                          ("secret_key", secret_key)):
            if not is_z85_key(key):
                raise ValueError("%s must be 40 Z85 characters" % name)
        self._ctx = context or zmq.Context.instance()
        self._on_gap = on_gap
        self._msg_ids = itertools.count(1)
        self._out_seq = itertools.count(1)
        self._outstanding = set()      # msg_ids sent and not yet answered
        self._answers = {}             # msg_id -> ("reply"|"rejected", body) not yet collected
        self._last_seq = {}            # family -> last seq seen (or baseline)
        self._floor = {}               # family -> seq S below which events are stale
        self._pending = collections.deque(maxlen=pending_limit)
        self._handshake = {"requests": None, "events": None}  # None | "ok" | ("refused", code)
        self._events_reconnected = False
        #: Counters: ``bad_frames`` (replies or events that failed validation),
        #: ``unknown_topics``, ``unknown_types``, ``stale_replies``, ``rejected``,
        #: ``events``, ``gaps``, ``lost_events``, ``restarts``, ``stale_events``,
        #: ``pending_dropped``, ``handshake_failures``, ``disconnects``.
        self.counters = collections.Counter()
        self._keys = (server_key, public_key, secret_key)
        self._subscribe = tuple(subscribe)
        self._events_endpoint = events_endpoint
        self._sockets = []
        try:
            self._dealer = self._curve_socket(zmq.DEALER, server_key, public_key, secret_key)
            self._dealer_mon = self._dealer.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                | zmq.EVENT_DISCONNECTED)
            self._sockets.append(self._dealer_mon)
            self._dealer.connect(requests_endpoint)
            self._sub = self._sub_mon = None
            if events_endpoint is not None:
                self._open_sub(events_endpoint)
        except Exception:
            self.close()
            raise

    def _open_sub(self, events_endpoint):
        """Make the SUB socket (with its monitor) and connect it."""
        self._sub = self._curve_socket(zmq.SUB, *self._keys)
        self._sub.setsockopt(zmq.RCVHWM, 10000)
        for prefix in self._subscribe:
            self._sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("utf-8"))
        self._sub_mon = self._sub.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_DISCONNECTED)
        self._sockets.append(self._sub_mon)
        self._sub.connect(events_endpoint)

    def _curve_socket(self, kind, server_key, public_key, secret_key):
        s = self._ctx.socket(kind)
        self._sockets.append(s)
        s.setsockopt(zmq.LINGER, 0)
        s.curve_serverkey = server_key.encode("ascii")
        s.curve_publickey = public_key.encode("ascii")
        s.curve_secretkey = secret_key.encode("ascii")
        # ZMTP heartbeats end a connection to a server that went silent.
        s.setsockopt(zmq.HEARTBEAT_IVL, 5000)
        s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 15000)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        return s

    # ------------------------------------------------------------------ lifecycle

    def close(self):
        """Close both connections (nothing is lingered on)."""
        for name in ("_dealer", "_sub"):
            s = getattr(self, name, None)
            if s is not None:
                try:
                    s.disable_monitor()
                except Exception:  # noqa: BLE001
                    pass
        for s in reversed(self._sockets):
            try:
                s.close(linger=0)
            except Exception:  # noqa: BLE001
                pass
        self._sockets = []

    def close_events(self):
        """Close the events connection only; requests keep working.

        What the client remembers of the event stream (the last ``seq`` seen in each
        family, and events held back by :meth:`resync`) is kept.  Events still
        queued in the closed socket, and every event published until
        :meth:`reopen_events`, are lost.  :meth:`next_event` raises until then.
        """
        if self._sub is None:
            return
        try:
            self._sub.disable_monitor()
        except Exception:  # noqa: BLE001
            pass
        for s in (self._sub_mon, self._sub):
            try:
                s.close(linger=0)
            except Exception:  # noqa: BLE001
                pass
            if s in self._sockets:
                self._sockets.remove(s)
        self._sub = self._sub_mon = None
        self._handshake["events"] = None

    def reopen_events(self, events_endpoint=None):
        """Open a new events connection (closing the current one, if any) with the
        same key pair and subscriptions, keeping the sequence memory.

        ``events_endpoint`` defaults to the one given to the constructor.  Because
        the last ``seq`` of each family is carried over, the first event of a family
        received on the new connection reports what was published meanwhile as a
        ``gap`` (or a ``restart`` when ``seq`` went back): call :meth:`resync` then.
        As with any new subscription, events published in the moment before it takes
        effect are not received (see :meth:`wait_connected` for the handshake).
        """
        endpoint = events_endpoint if events_endpoint is not None else self._events_endpoint
        if endpoint is None:
            raise ParryBusError("this client has no events endpoint")
        self.close_events()
        self._open_sub(endpoint)
        self._events_endpoint = endpoint
        # A new connection: what the floors held back no longer applies, and a lower
        # seq now means a restart (as after a reconnection libzmq made itself).
        self._events_reconnected = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ monitors

    def _drain_monitor(self, which):
        mon = self._dealer_mon if which == "requests" else self._sub_mon
        if mon is None:
            return
        while True:
            try:
                msg = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                ev = zmq.utils.monitor.parse_monitor_message(msg)
            except Exception:  # noqa: BLE001
                continue
            code = ev.get("event")
            if code == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshake[which] = "ok"
            elif code in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                          zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                self.counters["handshake_failures"] += 1
                value = ev.get("value") if code == zmq.EVENT_HANDSHAKE_FAILED_AUTH else None
                self._handshake[which] = ("refused", value)
            elif code == zmq.EVENT_DISCONNECTED:
                self.counters["disconnects"] += 1
                if which == "events":
                    self._events_reconnected = True

    def handshake_state(self, which="requests"):
        """State of the CURVE handshake of ``"requests"`` or ``"events"``:
        ``None`` (not yet), ``"ok"`` or ``("refused", zap_status_or_None)``."""
        self._drain_monitor(which)
        return self._handshake[which]

    def wait_connected(self, timeout=10.0):
        """Wait until both connections completed their CURVE handshake.

        Returns True when they did; False on timeout or when the server refused a
        handshake (see :meth:`handshake_state`: an unregistered key, or the wrong
        server key).  libzmq does not retry a handshake the server refused.
        """
        deadline = time.monotonic() + timeout
        names = ["requests"] + (["events"] if self._sub is not None else [])
        mons = {self._dealer_mon: "requests", self._sub_mon: "events"}
        while True:
            states = [self.handshake_state(n) for n in names]
            if all(s == "ok" for s in states):
                return True
            if any(isinstance(s, tuple) for s in states):
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            poller = zmq.Poller()
            for mon, name in mons.items():
                if mon is not None and name in names:
                    poller.register(mon, zmq.POLLIN)
            poller.poll(max(1, int(min(left, 0.5) * 1000)))

    # ------------------------------------------------------------------ requests

    def send_message(self, type_, body):
        """Send one ``[header][body]`` message of ``type_`` on the requests
        connection and return its ``msg_id`` (low level; see :meth:`request`)."""
        msg_id = next(self._msg_ids)
        header = {"v": PROTOCOL_VERSION, "type": type_, "msg_id": msg_id, "device_id": "",
                  "seq": next(self._out_seq), "time": _now_us()}
        frames = [msgpack.packb(header, use_bin_type=True), msgpack.packb(body, use_bin_type=True)]
        try:
            self._dealer.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            # A handshake refused before this send leaves libzmq no connection to
            # queue on: the caller sees the same RequestTimeout as after the send.
            state = self.handshake_state("requests")
            if isinstance(state, tuple):
                raise RequestTimeout(msg_id, 0.0, state[1]) from None
            raise ParryBusError("the requests connection cannot take more messages now") from None
        self._outstanding.add(msg_id)
        return msg_id

    def send_request(self, method, path, body=None, idempotency_key=""):
        """Send a ``request`` without waiting; returns its ``msg_id`` for
        :meth:`wait_reply`.  Requests may be pipelined; replies come in any order."""
        if method not in ("GET", "POST"):
            raise ValueError("method must be GET or POST")
        if not isinstance(path, str) or not path.startswith("/api/v1/"):
            raise ValueError("path must start with /api/v1/")
        if body is None:
            text = ""
        elif isinstance(body, str):
            text = body
        else:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        if not isinstance(idempotency_key, str):
            raise ValueError("idempotency_key must be a string")
        return self.send_message("request", {"method": method, "path": path, "body": text,
                                             "idempotency_key": idempotency_key})

    def _read_dealer(self):
        """Read and file every message waiting on the requests connection."""
        while True:
            try:
                frames = self._dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                self.counters["bad_frames"] += 1
                continue
            header = _parse_header(frames[0])
            if header is None:
                self.counters["bad_frames"] += 1
                continue
            kind = header["type"]
            schema = _REPLY_SCHEMA if kind == "reply" else \
                _REJECTED_SCHEMA if kind == "rejected" else None
            if schema is None:
                self.counters["unknown_types"] += 1   # new types may appear: ignore
                continue
            raw = _unpack_map(frames[1])
            body = _apply_schema(raw, schema) if raw is not None else None
            if body is None:
                self.counters["bad_frames"] += 1
                continue
            msg_id = body["request_id"] if kind == "reply" else body["msg_id"]
            if kind == "rejected":
                self.counters["rejected"] += 1
            if msg_id not in self._outstanding:
                self.counters["stale_replies"] += 1   # answered after we gave up, or msg_id 0
                continue
            self._outstanding.discard(msg_id)
            self._answers[msg_id] = (kind, body)

    def wait_reply(self, msg_id, timeout=30.0):
        """Wait for the answer to ``msg_id``.

        Returns the validated ``reply`` body (``request_id``, ``status``, ``body``).
        Raises :class:`Rejected` when the server refused the message and
        :class:`RequestTimeout` when nothing came in time (the id is then forgotten:
        a late answer is counted as ``stale_replies`` and dropped).
        """
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self._dealer, zmq.POLLIN)
        poller.register(self._dealer_mon, zmq.POLLIN)
        while True:
            self._read_dealer()
            self._drain_monitor("requests")
            if msg_id in self._answers:
                kind, body = self._answers.pop(msg_id)
                if kind == "rejected":
                    raise Rejected(body["msg_id"], body["type"], body["limit"], body["value"],
                                   body["reason"], body["retry_after_ms"])
                return body
            left = deadline - time.monotonic()
            if left <= 0:
                self._outstanding.discard(msg_id)
                state = self._handshake["requests"]
                refused = state[1] if isinstance(state, tuple) else None
                if isinstance(state, tuple) and refused is None:
                    refused = "unknown"
                raise RequestTimeout(msg_id, timeout, refused)
            poller.poll(max(1, int(min(left, 1.0) * 1000)))

    def request(self, method, path, body=None, idempotency_key="", timeout=30.0):
        """Make one REST call (docs/rest-api.md) as this integrator.

        ``method`` ``"GET"`` or ``"POST"``; ``path`` ``/api/v1/...`` with its query
        string; ``body`` a dict/list (sent as JSON), a JSON ``str``, or None;
        ``idempotency_key`` as the ``Idempotency-Key`` header.

        Returns ``(status, json)``: the HTTP status REST would answer and the decoded
        JSON body (``None`` when the body is empty).  Errors are answered as JSON too:
        ``{"error": {"code", "message"}}`` with status 400/403/404/409/429/503.
        The server answers every request within 25 s, so the default ``timeout`` is
        30 s.  Raises :class:`Rejected`, :class:`RequestTimeout` or
        :class:`MalformedReply`.
        """
        msg_id = self.send_request(method, path, body, idempotency_key)
        reply = self.wait_reply(msg_id, timeout)
        text = reply["body"]
        if text == "":
            return reply["status"], None
        try:
            return reply["status"], json.loads(text)
        except ValueError:
            self.counters["bad_frames"] += 1
            raise MalformedReply(msg_id, reply["status"], text, "body is not JSON") from None

    def snapshot(self, timeout=30.0, baseline=False):
        """Ask for the last ``seq`` published in each event family.

        Returns ``{"incident": N, "action": N, "device": N}`` (0 before the first
        event; a family the server did not name is 0).  With ``baseline=True`` these
        become the point from which gaps are detected: the next event of a family
        must be N + 1, and events with seq <= N still in transit are dropped as
        already covered (counted as ``stale_events``).
        """
        msg_id = self.send_message("snapshot", {})
        reply = self.wait_reply(msg_id, timeout)
        try:
            doc = json.loads(reply["body"])
        except ValueError:
            doc = None
        seqs = doc.get("seq") if isinstance(doc, dict) else None
        if reply["status"] != 200 or not isinstance(seqs, dict):
            self.counters["bad_frames"] += 1
            raise MalformedReply(msg_id, reply["status"], reply["body"],
                                 'expected 200 {"seq": {...}}')
        out = {}
        for family in set(FAMILIES) | set(seqs):
            value = seqs.get(family, 0)
            if not _is_uint(value):
                self.counters["bad_frames"] += 1
                raise MalformedReply(msg_id, reply["status"], reply["body"],
                                     "seq of %s is not an unsigned integer" % family)
            out[family] = value
        if baseline:
            self._set_baseline(out, FAMILIES)
        return out

    # ------------------------------------------------------------------ events

    def _read_event(self, frames):
        """Validate one events message; an Event without sequence flags, or None."""
        if len(frames) != 3:
            self.counters["bad_frames"] += 1
            return None
        try:
            topic = frames[0].decode("utf-8")
        except UnicodeDecodeError:
            self.counters["bad_frames"] += 1
            return None
        m = _TOPIC_RE.match(topic)
        if not m:
            self.counters["bad_frames"] += 1
            return None
        family, kind = m.group(1), m.group(2)
        if family not in _EVENT_SCHEMAS:
            self.counters["unknown_topics"] += 1   # new topics may appear: ignore them
            return None
        header = _parse_header(frames[1])
        if header is None or header["type"] != "event" or header["seq"] < 1:
            self.counters["bad_frames"] += 1
            return None
        raw = _unpack_map(frames[2])
        body = _apply_schema(raw, _EVENT_SCHEMAS[family]) if raw is not None else None
        if body is None:
            self.counters["bad_frames"] += 1
            return None
        return Event(topic, family, kind, header["seq"], header["time"], body)

    def _recv_raw_event(self):
        """One validated event from the socket without blocking, or None when the
        socket is empty (malformed messages are skipped)."""
        while True:
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            ev = self._read_event(frames)
            if ev is not None:
                return ev

    def _sequence(self, ev):
        """Apply gap/restart detection; returns the event, or None to drop it."""
        f = ev.family
        if self._events_reconnected:
            # The events connection was re-established: what is held back no longer
            # protects against stale numbers; a lower seq now means a restart.
            self._floor.clear()
            self._events_reconnected = False
        last = self._last_seq.get(f)
        floor = self._floor.get(f)
        if floor is not None:
            if ev.seq <= floor:
                self.counters["stale_events"] += 1  # covered by the snapshot/resync read
                return None
            del self._floor[f]
        if last is None:
            ev.first = True
        elif ev.seq == last + 1:
            pass
        elif ev.seq > last + 1:
            ev.gap, ev.missed = True, ev.seq - last - 1
            self.counters["gaps"] += 1
            self.counters["lost_events"] += ev.missed
        else:
            ev.restart = True
            self.counters["restarts"] += 1
        self._last_seq[f] = ev.seq
        self.counters["events"] += 1
        if (ev.gap or ev.restart) and self._on_gap is not None:
            self._on_gap(ev)
        return ev

    def next_event(self, timeout=1.0):
        """Return the next :class:`Event`, or None when none came within ``timeout``
        seconds.  Malformed messages and unknown topics are skipped and counted.
        Each event carries ``gap`` / ``restart`` flags (see :class:`Event`)."""
        if self._sub is None:
            raise ParryBusError("this client has no events connection")
        deadline = time.monotonic() + timeout
        poller = zmq.Poller()
        poller.register(self._sub, zmq.POLLIN)
        poller.register(self._sub_mon, zmq.POLLIN)
        while True:
            self._drain_monitor("events")
            while self._pending:
                ev = self._sequence(self._pending.popleft())
                if ev is not None:
                    return ev
            while True:
                raw = self._recv_raw_event()
                if raw is None:
                    break
                ev = self._sequence(raw)
                if ev is not None:
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            poller.poll(max(1, int(min(left, 1.0) * 1000)))

    def events(self, timeout=None, idle=1.0):
        """Iterate over events.  Stops after ``timeout`` seconds in total (None: never)
        and yields ``None`` after each ``idle`` seconds without an event, so a loop can
        do other work (for instance poll REST) while waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = idle if deadline is None else min(idle, deadline - time.monotonic())
            if wait <= 0:
                return
            yield self.next_event(wait)

    def _hold_back(self, max_messages=100000):
        """Move the events already received into the pending queue (no waiting)."""
        if self._sub is None:
            return
        self._drain_monitor("events")
        for _ in range(max_messages):
            ev = self._recv_raw_event()
            if ev is None:
                return
            if len(self._pending) == self._pending.maxlen:
                self.counters["pending_dropped"] += 1
            self._pending.append(ev)

    def _set_baseline(self, seqs, families):
        for f in families:
            s = seqs.get(f, 0)
            self._last_seq[f] = s
            self._floor[f] = s

    def read_all(self, path, key, timeout=30.0, max_pages=1000):
        """GET every page of a REST list (``/api/v1/devices``, ``/incidents``,
        ``/actions``, with filters in the query) and return the rows of ``key``.
        Raises :class:`ParryBusError` on a non-200 answer."""
        rows, cursor = [], None
        deadline = time.monotonic() + timeout
        for _ in range(max_pages):
            page_path = path
            if cursor is not None:
                page_path += ("&" if "?" in path else "?") + "cursor=" + _quote(cursor)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ParryBusError("reading %s took longer than %.1f s" % (path, timeout))
            status, doc = self.request("GET", page_path, timeout=left)
            if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get(key), list):
                raise ParryBusError("GET %s answered %s: %s" % (page_path, status, _error_text(doc)))
            rows.extend(doc[key])
            cursor = doc.get("next_cursor")
            if not isinstance(cursor, str) or not cursor:
                return rows
        raise ParryBusError("GET %s: more than %d pages" % (path, max_pages))

    def resync(self, families=None, paths=None, read_state=True, timeout=60.0):
        """Resynchronise after a gap or a restart (docs/bus-protocol.md, "Events").

        Keeps the subscription open, holds back the events already received, sends
        ``snapshot`` for each family's current seq S, reads the current state over
        REST (all pages; ``paths`` may map a family to a filtered list path such as
        ``"/api/v1/actions?incident_id=inc-1"``), and then lets :meth:`next_event`
        deliver only the events with seq > S.  An event between the snapshot and the
        read may be seen twice; every body carries its object's full state, so
        applying it again is harmless.

        ``families`` defaults to all three.  Returns a :class:`ResyncResult`.
        """
        families = list(families or FAMILIES)
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ValueError("unknown families: %s" % ", ".join(unknown))
        deadline = time.monotonic() + timeout
        self._hold_back()
        seqs = self.snapshot(timeout=max(0.1, deadline - time.monotonic()))
        state = {f: None for f in families}
        if read_state:
            for f in families:
                default_path, key = FAMILIES[f]
                path = (paths or {}).get(f, default_path)
                state[f] = self.read_all(path, key, timeout=max(0.1, deadline - time.monotonic()))
        self._hold_back()
        self._set_baseline(seqs, families)
        return ResyncResult({f: seqs[f] for f in families}, state)


def _quote(text):
    from urllib.parse import quote
    return quote(text, safe="")


def _error_text(doc):
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        return "%s: %s" % (err.get("code"), err.get("message"))
    return repr(doc)[:200]
