#!/usr/bin/python3
"""Example Parry integrator: isolate the device of the newest incident.

1. connects to parryd's integrator endpoints with its CURVE key pair and subscribes
   to the event stream (taking a snapshot first, so lost events show up as gaps);
2. finds the newest incident (GET /api/v1/incidents?limit=1), waiting for an
   ``incident.created`` event when there is none yet;
3. triggers an ``isolate`` on the incident's detection (POST /api/v1/actions);
4. follows the action on the event stream to its final state, falling back to
   GET /api/v1/actions/{id} when events were lost or the stream is quiet.

Exit status: 0 when the action ends ``completed``, 1 otherwise (failed, expired,
cancelled, refused, time-out, connection problem), 2 for bad arguments.

    examples/integrator.py --requests tcp://127.0.0.1:7402 --events tcp://127.0.0.1:7403 \\
        --server-key-file /srv/parry/keys/curve.pub --key-file ~/.parry/soar.keys

A Z85 key may begin with "-": give it as ``--server-key=KEY`` (with "="), or better
as ``--server-key-file``, so that it is not taken for an option.

Needs python3-zmq and python3-msgpack (Debian 12: /usr/bin/python3).
"""

import argparse
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                os.pardir, "clients", "python"))
import parry_bus  # noqa: E402


def log(text):
    print("[integrator %s] %s" % (time.strftime("%H:%M:%S"), text), flush=True)


def error_text(doc):
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return "%s: %s" % (doc["error"].get("code"), doc["error"].get("message"))
    return repr(doc)[:300]


def left(deadline):
    return max(0.05, deadline - time.monotonic())


def newest_incident(client, deadline):
    """The newest incident's summary; waits (bounded) for one to be created."""
    while True:
        status, doc = client.request("GET", "/api/v1/incidents?limit=1",
                                     timeout=min(30.0, left(deadline)))
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("incidents"), list):
            raise parry_bus.ParryBusError("GET /api/v1/incidents answered %s: %s"
                                          % (status, error_text(doc)))
        if doc["incidents"] and isinstance(doc["incidents"][0], dict) \
                and isinstance(doc["incidents"][0].get("incident_id"), str):
            return doc["incidents"][0]
        log("no incident yet; waiting for incident.created")
        while time.monotonic() < deadline:
            ev = client.next_event(timeout=min(1.0, left(deadline)))
            if ev is not None and ev.family == "incident":
                break
        else:
            raise parry_bus.ParryBusError("no incident appeared in time")


def poll_action(client, action_id, deadline):
    """GET /api/v1/actions/{id}: (state, action dict) or (None, None)."""
    status, doc = client.request("GET", "/api/v1/actions/" + action_id,
                                 timeout=min(30.0, left(deadline)))
    action = doc.get("action") if isinstance(doc, dict) else None
    if status != 200 or not isinstance(action, dict) or not isinstance(action.get("state"), str):
        log("GET /api/v1/actions/%s answered %s: %s" % (action_id, status, error_text(doc)))
        return None, None
    return action["state"], action


def follow(client, action_id, state, deadline, quiet=1.0):
    """Follow the action to a final state.  Returns (state, details)."""
    details = ""
    last_heard = time.monotonic()
    while state not in parry_bus.FINAL_ACTION_STATES:
        if time.monotonic() >= deadline:
            log("timed out waiting for action %s (last state %s)" % (action_id, state))
            return state, "timeout"
        ev = client.next_event(timeout=min(quiet, left(deadline)))
        must_poll = False
        if ev is None:
            # Quiet stream: the last event may have been lost without a later one
            # to reveal the gap, so look it up.
            must_poll = time.monotonic() - last_heard >= quiet
        elif ev.family == "action" and ev.lost:
            log("action events lost (%s at seq %d); checking over REST"
                % ("restart" if ev.restart else "%d missed" % ev.missed, ev.seq))
            must_poll = True
        if ev is not None and ev.family == "action" and ev.body["action_id"] == action_id:
            last_heard = time.monotonic()
            new = ev.body["state"] or ev.kind
            if new != state:
                log("action %s: %s -> %s (event seq %d)" % (action_id, state, new, ev.seq))
            state = new
            if ev.body["result_error"]:
                details = ev.body["result_error"]
        if must_poll and state not in parry_bus.FINAL_ACTION_STATES:
            last_heard = time.monotonic()
            polled, action = poll_action(client, action_id, deadline)
            if polled is not None and polled != state:
                log("action %s: %s -> %s (from GET /api/v1/actions/%s)"
                    % (action_id, state, polled, action_id))
                state = polled
                result = action.get("result")
                if isinstance(result, dict) and isinstance(result.get("error"), str):
                    details = result["error"] or details
    return state, details


def read_server_key(path):
    """The server's CURVE public key from ``path`` (parryd's keys/curve.pub): one Z85 line."""
    try:
        with open(path, "rb") as f:
            data = f.read(4097)
    except OSError as e:
        raise ValueError("cannot read %s: %s" % (path, e.strerror)) from None
    if len(data) > 4096:
        raise ValueError("%s is over 4 KiB: not a key file" % path)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError("%s is not ASCII: not a key file" % path) from None
    return text


def parse_args(argv=None):
    """Arguments, with ``server_key`` set from --server-key or --server-key-file.

    Exits 2 (argparse) on bad arguments.
    """
    ap = argparse.ArgumentParser(description="Isolate the device of the newest Parry incident "
                                             "over the integrator bus.")
    ap.add_argument("--requests", required=True, help="requests endpoint, e.g. tcp://127.0.0.1:7402")
    ap.add_argument("--events", required=True, help="events endpoint, e.g. tcp://127.0.0.1:7403")
    key = ap.add_mutually_exclusive_group(required=True)
    key.add_argument("--server-key", help="the server's CURVE public key (Z85); a key that begins "
                                          "with '-' must be given as --server-key=KEY")
    key.add_argument("--server-key-file", help="file holding the server's CURVE public key "
                                               "(parryd's keys/curve.pub)")
    ap.add_argument("--key-file", required=True,
                    help="file with the integrator's 'public Z85' and 'secret Z85' lines (mode 0600)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole run (default 60)")
    args = ap.parse_args(argv)
    if args.timeout <= 0:
        ap.error("--timeout must be positive")
    if args.server_key_file is not None:
        try:
            args.server_key = read_server_key(args.server_key_file)
        except ValueError as e:
            ap.error("--server-key-file: %s" % e)
    if not parry_bus.is_z85_key(args.server_key):
        ap.error("the server key must be 40 Z85 characters")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        public, secret = parry_bus.load_key_file(args.key_file)
    except parry_bus.KeyFileError as e:
        log(str(e))
        return 2

    deadline = time.monotonic() + args.timeout
    client = parry_bus.IntegratorClient(args.requests, args.events, args.server_key, public, secret,
                                        subscribe=("incident.", "action."))
    try:
        if not client.wait_connected(timeout=min(10.0, left(deadline))):
            log("could not connect: requests %s, events %s (is the key registered? the server key right?)"
                % (client.handshake_state("requests"), client.handshake_state("events")))
            return 1
        snap = client.snapshot(timeout=min(30.0, left(deadline)), baseline=True)
        log("connected; event seq now %s" % ", ".join("%s %d" % kv for kv in sorted(snap.items())))

        incident = newest_incident(client, deadline)
        detection = incident.get("detection") if isinstance(incident.get("detection"), dict) else {}
        log("newest incident %s on %s: %s (%s)" % (incident["incident_id"], incident.get("device_id"),
                                                   detection.get("name"), detection.get("severity")))

        body = {"type": "isolate", "incident_id": incident["incident_id"],
                "target": {"kind": "detection"},
                "comment": "isolated by examples/integrator.py"}
        status, doc = client.request("POST", "/api/v1/actions", body,
                                     idempotency_key="example-" + uuid.uuid4().hex,
                                     timeout=min(30.0, left(deadline)))
        action = doc.get("action") if isinstance(doc, dict) else None
        if status not in (200, 202) or not isinstance(action, dict) \
                or not isinstance(action.get("action_id"), str):
            log("POST /api/v1/actions answered %s: %s" % (status, error_text(doc)))
            return 1
        action_id, state = action["action_id"], action.get("state") or "registered"
        print("action_id=%s" % action_id, flush=True)
        log("isolate registered as %s on %s (requested by %s), state %s"
            % (action_id, action.get("device_id"), action.get("requested_by"), state))

        state, details = follow(client, action_id, state, deadline)
        log("action %s ended %s%s" % (action_id, state, (": " + details) if details else ""))
        if client.counters["bad_frames"]:
            log("skipped %d malformed frames" % client.counters["bad_frames"])
        return 0 if state == "completed" else 1
    except parry_bus.Rejected as e:
        log(str(e))
        return 1
    except parry_bus.ParryBusError as e:
        log("error: %s" % e)
        return 1
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
