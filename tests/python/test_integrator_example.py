#!/usr/bin/python3
"""End-to-end test of the Python integrator client and examples/integrator.py.

Starts parryd (CURVE bus, integrator endpoints) and three simulated agents on free
loopback ports, registers integrator keys over REST and checks:

* examples/integrator.py isolates the device of the newest incident and exits 0,
  and the action is `completed` over REST, requested by `integrator:<name>`;
* a key that is not registered gets no reply (bounded wait);
* an `operator` integrator may read but gets 403 on POST /api/v1/actions;
* paths that stay with people (users, tokens, ...) are 403 for integrators;
* a message of an unknown type is answered `rejected`;
* snapshot and resync work;
* a subscriber whose events connection was closed while an action ran sees the
  missed `action` events as a gap in `seq` when it subscribes again (same sequence
  memory, IntegratorClient.reopen_events), and resync() reads that action, final.

Environment: PARRY_BIN_DIR (parryd, parry-agent; or --bin-dir), PARRY_SCENARIOS_DIR
(or --scenarios).  Needs python3-zmq and python3-msgpack (Debian: /usr/bin/python3).
Exit status 0 on success.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
import parry_bus  # noqa: E402
from parry_procs import die_with_parent, free_ports  # noqa: E402

ADMIN_PASSWORD = "integrator-test-password-1"
EXAMPLE = os.path.join(ROOT, "examples", "integrator.py")


class TestFailure(Exception):
    pass


def check(cond, text):
    if not cond:
        raise TestFailure(text)


def step(text):
    print("--- %s" % text, flush=True)


def poll(what, fn, timeout, interval=0.1):
    """Call fn() until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()[-65536:].decode("utf-8", "replace").splitlines()
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    return "\n".join(data[-lines:])


def wait_for_binary(path, timeout=60):
    """The build may be relinking: wait until the binary exists and is executable."""
    poll("%s to exist" % path, lambda: os.path.isfile(path) and os.access(path, os.X_OK), timeout, 0.5)


class Rest:
    """A minimal HTTPS JSON client for parryd's REST API (a new connection per call)."""

    def __init__(self, port, cafile):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.ctx.check_hostname = False
        self.bearer = None
        self.cookie = None
        self.csrf = None

    def call(self, method, path, body=None, headers=None, timeout=30):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)
        try:
            hdrs = {"Accept": "application/json"}
            if body is not None:
                hdrs["Content-Type"] = "application/json"
            if self.bearer:
                hdrs["Authorization"] = "Bearer " + self.bearer
            elif self.cookie:
                hdrs["Cookie"] = self.cookie
                if method != "GET":
                    hdrs["X-CSRF-Token"] = self.csrf
            hdrs.update(headers or {})
            conn.request(method, "/api/v1" + path,
                         body=None if body is None else json.dumps(body), headers=hdrs)
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            doc = json.loads(text) if text else None
            return resp.status, doc, resp
        finally:
            conn.close()

    def expect(self, status, method, path, body=None):
        got, doc, _ = self.call(method, path, body)
        check(got == status, "%s %s: expected %d, got %d: %r" % (method, path, status, got, doc))
        return doc


class Harness:
    def __init__(self, bin_dir, scenarios):
        self.bin_dir = bin_dir
        self.scenarios = scenarios
        self.tmp = tempfile.mkdtemp(prefix="parry-integrator-test-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.procs = []     # (name, Popen, log path)
        self.clients = []

    # -------------------------------------------------------------- processes

    def start(self, name, argv, env_extra):
        log_path = os.path.join(self.tmp, name + ".log")
        env = dict(os.environ)
        env.update(env_extra)
        logf = open(log_path, "wb")
        try:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        finally:
            logf.close()
        self.procs.append((name, proc, log_path))
        return proc, log_path

    def stop_all(self):
        for _, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc, _ in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def check_alive(self):
        """Fail at once (rather than at a deadline) when a started process ended."""
        for name, proc, _ in self.procs:
            if proc.poll() is not None:
                raise TestFailure("%s exited early with status %s" % (name, proc.returncode))

    def print_logs(self):
        for name, proc, path in self.procs:
            print("===== %s (pid %d, exit %s): last lines of %s =====" % (
                name, proc.pid, proc.poll(), path), flush=True)
            print(tail(path), flush=True)

    def cleanup(self):
        for c in self.clients:
            c.close()
        self.stop_all()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def client(self, public, secret, events=True):
        c = parry_bus.IntegratorClient(self.requests_ep, self.events_ep if events else None,
                                       self.server_key, public, secret)
        self.clients.append(c)
        return c

    # -------------------------------------------------------------- the run

    def run(self):
        parryd = os.path.join(self.bin_dir, "parryd")
        agent = os.path.join(self.bin_dir, "parry-agent")
        wait_for_binary(parryd)
        wait_for_binary(agent)

        http_port, bus, enroll, integ, events = free_ports(5)
        self.bus_ep = "tcp://127.0.0.1:%d" % bus
        self.enroll_ep = "tcp://127.0.0.1:%d" % enroll
        self.requests_ep = "tcp://127.0.0.1:%d" % integ
        self.events_ep = "tcp://127.0.0.1:%d" % events
        step("examples/integrator.py takes a server key that begins with '-'")
        self.dash_key_arguments()

        config = os.path.join(self.tmp, "parryd.toml")
        with open(config, "w") as f:
            f.write("heartbeat_interval_ms = 300\npbkdf2_iterations = 20000\n")

        step("starting parryd")
        proc, log_path = self.start("parryd", [
            parryd, "--config", config, "--data-dir", self.data_dir,
            "--http-port", str(http_port), "--bus", self.bus_ep,
            "--bus-enroll-endpoint", self.enroll_ep,
            "--bus-integrator-endpoint", self.requests_ep,
            "--bus-events-endpoint", self.events_ep,
            "--metrics-port", "0",  # not 9469: tests may run side by side
        ], {"PARRY_ADMIN_PASSWORD": ADMIN_PASSWORD})

        def ready():
            if proc.poll() is not None:
                raise TestFailure("parryd exited with status %s" % proc.returncode)
            text = open(log_path, "rb").read().decode("utf-8", "replace")
            if "parryd ready" not in text:
                return None
            m = re.search(r"^\s+server key (\S{40})\s*$", text.split("parryd ready", 1)[1], re.M)
            return m.group(1) if m else None
        self.server_key = poll("parryd ready and its server key", ready, 30, 0.05)
        check(parry_bus.is_z85_key(self.server_key), "server key %r is not Z85" % self.server_key)
        with open(os.path.join(self.data_dir, "keys", "curve.pub")) as f:
            check(f.read().strip() == self.server_key, "printed server key differs from keys/curve.pub")

        step("logging in and making a bearer token")
        rest = Rest(http_port, os.path.join(self.data_dir, "tls", "cert.pem"))
        status, doc, resp = rest.call("POST", "/login", {"username": "admin", "password": ADMIN_PASSWORD})
        check(status == 200 and isinstance(doc, dict) and doc.get("csrf_token"),
              "login: %s %r" % (status, doc))
        cookie = None
        for value in resp.headers.get_all("Set-Cookie") or []:
            m = re.match(r"\s*(parry_session=[^;]*)", value)
            if m:
                cookie = m.group(1)
        check(cookie, "login set no parry_session cookie")
        rest.cookie, rest.csrf = cookie, doc["csrf_token"]
        doc = rest.expect(201, "POST", "/tokens", {"name": "integrator-test", "expires_in": 3600})
        check(isinstance(doc.get("token"), str), "POST /tokens gave no token: %r" % doc)
        rest.bearer = doc["token"]

        step("enrolling and starting 3 simulated agents")
        doc = rest.expect(201, "POST", "/enrollment-tokens", {"ttl_seconds": 600, "uses": 3})
        self.start("parry-agent", [
            agent, "--sim", "3", "--server", self.bus_ep, "--enroll-server", self.enroll_ep,
            "--state-dir", os.path.join(self.tmp, "agent-state"), "--scenarios", self.scenarios,
            "--incident-interval-ms", "500", "--incidents", "2",
        ], {"PARRY_ENROLL_TOKEN": doc["token"]})

        step("registering integrator keys")
        so_pub, so_sec = parry_bus.generate_keypair()
        op_pub, op_sec = parry_bus.generate_keypair()
        stranger_pub, stranger_sec = parry_bus.generate_keypair()
        doc = rest.expect(201, "POST", "/integrators",
                          {"name": "soar-test", "role": "security_officer", "public_key": so_pub})
        check(doc == {"name": "soar-test", "role": "security_officer"}, "POST /integrators: %r" % doc)
        rest.expect(201, "POST", "/integrators",
                    {"name": "viewer-test", "role": "operator", "public_key": op_pub})
        key_file = os.path.join(self.tmp, "soar.keys")
        parry_bus.write_key_file(key_file, so_pub, so_sec)
        check(os.stat(key_file).st_mode & 0o777 == 0o600, "key file is not mode 0600")
        check(parry_bus.load_key_file(key_file) == (so_pub, so_sec), "key file does not read back")

        step("an unregistered key gets no reply")
        stranger = self.client(stranger_pub, stranger_sec, events=False)
        t0 = time.monotonic()
        try:
            stranger.request("GET", "/api/v1/health", timeout=3.0)
            raise TestFailure("an unregistered key got a reply")
        except parry_bus.RequestTimeout as e:
            check(time.monotonic() - t0 < 6, "the bounded wait took too long")
            print("    %s" % e, flush=True)

        step("an operator integrator reads but may not trigger")
        op = self.client(op_pub, op_sec, events=False)
        status, doc = op.request("GET", "/api/v1/health", timeout=10)
        check(status == 200 and doc == {"status": "ok"}, "operator GET /health: %s %r" % (status, doc))
        status, doc = op.request("GET", "/api/v1/users", timeout=10)
        check(status == 403 and doc["error"]["code"] == "forbidden",
              "operator GET /users: %s %r" % (status, doc))

        step("waiting for an incident")
        def incident():
            self.check_alive()
            return rest.expect(200, "GET", "/incidents?limit=1")["incidents"]
        poll("an incident", incident, 30, 0.2)
        newest = rest.expect(200, "GET", "/incidents?limit=1")["incidents"][0]
        status, doc = op.request("POST", "/api/v1/actions",
                                 {"type": "isolate", "incident_id": newest["incident_id"],
                                  "target": {"kind": "detection"}}, timeout=10)
        check(status == 403 and isinstance(doc, dict) and doc.get("error", {}).get("code") == "forbidden",
              "operator POST /actions: expected 403 forbidden, got %s %r" % (status, doc))

        step("security_officer integrator: snapshot, rejected, forbidden paths, resync")
        so = self.client(so_pub, so_sec)
        check(so.wait_connected(10), "security_officer client did not connect: %s / %s"
              % (so.handshake_state("requests"), so.handshake_state("events")))
        snap = so.snapshot(timeout=10, baseline=True)
        check(set(snap) >= {"incident", "action", "device"} and snap["incident"] >= 1,
              "snapshot: %r" % snap)
        msg_id = so.send_message("bogus", {})
        try:
            so.wait_reply(msg_id, timeout=10)
            raise TestFailure("a message of type 'bogus' was answered as a request")
        except parry_bus.Rejected as e:
            check(e.msg_id == msg_id and e.retry_after_ms == 0 and e.reason, "rejected: %r" % vars(e))
            print("    %s" % e, flush=True)
        for method, path in (("GET", "/api/v1/audit"), ("POST", "/api/v1/tokens")):
            status, doc = so.request(method, path, {} if method == "POST" else None, timeout=10)
            check(status == 403, "integrator %s %s: expected 403, got %s %r" % (method, path, status, doc))
        res = so.resync(timeout=30)
        check(res.state["incident"] and res.state["device"] is not None, "resync: %r" % res)
        check(len(res.state["device"]) == 3, "resync read %d devices" % len(res.state["device"]))
        so.close()

        step("running examples/integrator.py")
        argv = [sys.executable, EXAMPLE, "--requests", self.requests_ep, "--events", self.events_ep,
                "--server-key-file", os.path.join(self.data_dir, "keys", "curve.pub"),
                "--key-file", key_file, "--timeout", "30"]
        try:
            run = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, timeout=45)
        except subprocess.TimeoutExpired as e:
            print((e.output or b"").decode("utf-8", "replace"), flush=True)
            raise TestFailure("examples/integrator.py did not end within 45 s")
        out = run.stdout.decode("utf-8", "replace")
        print(out, end="", flush=True)
        check(run.returncode == 0, "examples/integrator.py exited %d" % run.returncode)
        m = re.search(r"^action_id=(\S+)$", out, re.M)
        check(m, "examples/integrator.py printed no action_id")
        action = rest.expect(200, "GET", "/actions/" + m.group(1))["action"]
        check(action["state"] == "completed" and action["type"] == "isolate",
              "action over REST: %r" % action)
        check(action["requested_by"] == "integrator:soar-test",
              "requested_by is %r" % action["requested_by"])
        self.check_alive()

        step("a subscriber that missed action events detects the gap and resyncs")
        self.gap_and_resync(rest, so_pub, so_sec)
        self.check_alive()
        step("all checks passed")

    # -------------------------------------------------------------- gap and resync

    def dash_key_arguments(self):
        """Z85 keys begin with '-' one time in 85: the example must still take them."""
        sys.path.insert(0, os.path.dirname(EXAMPLE))
        import integrator  # noqa: E402  (examples/integrator.py)
        key = "-/=" + "x" * 37
        check(parry_bus.is_z85_key(key), "test key %r is not Z85" % key)
        key_path = os.path.join(self.tmp, "dash-server.pub")
        with open(key_path, "w") as f:
            f.write(key + "\n")
        common = ["--requests", "tcp://127.0.0.1:1", "--events", "tcp://127.0.0.1:2",
                  "--key-file", "unused"]
        for extra in (["--server-key-file", key_path], ["--server-key=" + key]):
            got = integrator.parse_args(common + extra).server_key
            check(got == key, "%s: server key %r, expected %r" % (extra[0], got, key))
        with open(key_path, "w") as f:
            f.write("not a key\n")
        try:
            integrator.parse_args(common + ["--server-key-file", key_path])
            raise TestFailure("a key file without a Z85 key was accepted")
        except SystemExit as e:
            check(e.code == 2, "a bad key file: exit %r, expected 2" % e.code)

    def trigger_isolate(self, rest):
        """POST an isolate of the newest incident's device over HTTPS; its action_id."""
        self.check_alive()
        newest = rest.expect(200, "GET", "/incidents?limit=1")["incidents"][0]
        doc = rest.expect(202, "POST", "/actions", {"type": "isolate", "incident_id": newest["incident_id"],
                                                   "target": {"kind": "detection"}})
        return doc["action"]["action_id"]

    def wait_final(self, rest, action_id, timeout=20):
        """Poll GET /actions/{id} until the action is final; returns it."""
        def final():
            self.check_alive()
            action = rest.expect(200, "GET", "/actions/" + action_id)["action"]
            return action if action.get("final") else None
        return poll("action %s to be final" % action_id, final, timeout, 0.05)

    @staticmethod
    def next_action_event(client, timeout):
        """The next `action.*` event the client delivers, or None after timeout s."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ev = client.next_event(timeout=min(0.5, left))
            if ev is not None and ev.family == "action":
                return ev

    def event_of_new_action(self, rest, client, what, attempts=3, per_attempt=5.0):
        """Trigger isolates until the client receives an action event after one of them.

        A new subscription takes effect a moment after the SUB connects, with no
        signal of when (docs/bus-protocol.md, "Events"): should an action come and go
        before it does, the next attempt finds it in effect.  Returns (action_id, the
        first action event received)."""
        for attempt in range(1, attempts + 1):
            action_id = self.trigger_isolate(rest)
            ev = self.next_action_event(client, per_attempt)
            if ev is not None:
                return action_id, ev
            final = self.wait_final(rest, action_id)
            print("    %s: no action event within %.0f s of %s (%s; attempt %d)"
                  % (what, per_attempt, action_id, final["state"], attempt), flush=True)
        raise TestFailure("%s: no action event after %d actions" % (what, attempts))

    def wait_published(self, client, at_least, timeout=15):
        """Poll snapshot until the action family's last published seq is >= at_least."""
        def published():
            seq = client.snapshot(timeout=10)["action"]
            return seq if seq >= at_least else None
        return poll("action seq %d to be published" % at_least, published, timeout, 0.05)

    def gap_and_resync(self, rest, public, secret):
        sub = self.client(public, secret)
        check(sub.wait_connected(10), "gap client did not connect: %s / %s"
              % (sub.handshake_state("requests"), sub.handshake_state("events")))
        sub.snapshot(timeout=10, baseline=True)

        # 1. The client follows the stream: it has seen every action event up to L.
        warm_id, ev = self.event_of_new_action(rest, sub, "warm-up")
        last = ev.seq
        deadline = time.monotonic() + 15
        while not (ev.body["action_id"] == warm_id and ev.body["state"] in parry_bus.FINAL_ACTION_STATES):
            ev = self.next_action_event(sub, max(0.05, deadline - time.monotonic()))
            check(ev is not None, "no final event of action %s (last seq seen %d)" % (warm_id, last))
            last = ev.seq
        published = sub.snapshot(timeout=10)["action"]
        while last < published:   # anything else published meanwhile
            ev = self.next_action_event(sub, max(0.05, deadline - time.monotonic()))
            check(ev is not None, "the gap client saw action events up to seq %d of %d" % (last, published))
            last = ev.seq
        print("    subscribed; action %s %s; action events seen up to seq %d"
              % (warm_id, ev.body["state"], last), flush=True)

        # 2. Nobody listens on this client while an action runs to its end.
        sub.close_events()
        missed_id = self.trigger_isolate(rest)
        missed = self.wait_final(rest, missed_id)
        # Each state an action goes through is one event (docs/bus-protocol.md): wait
        # until the server has handed them all to its PUB socket, so none can reach
        # the connection opened below.
        missed_upto = self.wait_published(sub, last + len(missed["transitions"]))
        print("    events closed; action %s ran to %s (%d transitions), action seq now %d"
              % (missed_id, missed["state"], len(missed["transitions"]), missed_upto), flush=True)

        # 3. Subscribe again with the same sequence memory; the next action shows the gap.
        sub.reopen_events()
        check(sub.wait_connected(10), "gap client's new events connection: %s"
              % (sub.handshake_state("events"),))
        next_id, ev = self.event_of_new_action(rest, sub, "after reconnecting")
        print("    first action event after reconnecting: %r" % ev, flush=True)
        check(ev.gap and not ev.restart, "expected a gap after seq %d, got %r" % (last, ev))
        check(ev.seq > missed_upto >= last + 2, "event seq %d: expected > %d (missed up to %d)"
              % (ev.seq, last + 1, missed_upto))
        check(ev.missed == ev.seq - last - 1, "missed %d, expected %d" % (ev.missed, ev.seq - last - 1))
        check(sub.counters["gaps"] >= 1 and sub.counters["lost_events"] >= ev.missed,
              "gap counters: %r" % dict(sub.counters))

        # 4. resync: the missed action is in the state read, final.
        res = sub.resync(timeout=30)
        check(res.seq["action"] >= ev.seq, "resync snapshot %r is behind seq %d" % (res.seq, ev.seq))
        actions = {a.get("action_id"): a for a in res.state["action"] or []}
        check(missed_id in actions, "resync did not read the missed action %s" % missed_id)
        got = actions[missed_id]
        check(got.get("state") in parry_bus.FINAL_ACTION_STATES and got.get("state") == missed["state"],
              "missed action after resync: %r (over REST: %s)" % (got, missed["state"]))
        check(next_id in actions, "resync did not read action %s" % next_id)
        print("    resync at %r: %s is %s" % (res.seq, missed_id, got["state"]), flush=True)

        # 5. From the resync on the stream is whole again: no gap up to the end of one
        #    more action.
        after_id = self.trigger_isolate(rest)
        deadline = time.monotonic() + 15
        while True:
            ev = self.next_action_event(sub, max(0.05, deadline - time.monotonic()))
            check(ev is not None, "no final event of action %s after the resync" % after_id)
            check(not ev.lost, "event after the resync reports lost events: %r" % ev)
            if ev.body["action_id"] == after_id and ev.body["state"] in parry_bus.FINAL_ACTION_STATES:
                break
        sub.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", default=os.environ.get("PARRY_BIN_DIR"))
    ap.add_argument("--scenarios", default=os.environ.get("PARRY_SCENARIOS_DIR")
                    or os.path.join(ROOT, "config", "scenarios"))
    args = ap.parse_args()
    if not args.bin_dir:
        print("set PARRY_BIN_DIR or pass --bin-dir", file=sys.stderr)
        return 2
    def on_term(signum, _frame):
        raise TestFailure("interrupted by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    h = Harness(os.path.abspath(args.bin_dir), os.path.abspath(args.scenarios))
    ok = False
    try:
        h.run()
        ok = True
    except TestFailure as e:
        print("FAIL: %s" % e, flush=True)
    except Exception:  # noqa: BLE001
        print("FAIL: unexpected error", flush=True)
        traceback.print_exc()
        sys.stdout.flush()
    finally:
        if not ok:
            for _, proc, _ in h.procs:
                if proc.poll() is None:
                    proc.kill()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
            h.print_logs()
        h.cleanup()
    print("%s in %.1f s" % ("PASS" if ok else "FAIL", time.monotonic() - started), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
