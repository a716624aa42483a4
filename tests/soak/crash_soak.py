#!/usr/bin/env python3
"""Crash soak: SIGKILL parryd at random moments under load, then prove nothing was
lost or run twice.

    load thread ── REST (POST /actions, reverses) ──▶ parryd ◀── bus ── agents A (always up)
    main thread ── SIGKILL / restart, N cycles ─────▶   │    ◀── bus ── agents B (SIGSTOP'd
                                                         ▼                  at times: offline)
                                                      parry.db

Agents A and B are parry-agent --sim processes that live through the whole run, so
their in-memory journals, and the one "executed <action_id> ..." line each writes
per real execution (docs/agent-sim.md), survive every server crash. Group B is
stopped and continued now and then, so some devices go offline and come back.

The load thread registers actions of every type through the REST API, each with an
Idempotency-Key; a request cut off by a kill is retried with the same key once the
server is back. After the last cycle every agent runs, the server gets time to
settle, and the checks read parry.db (sqlite3, read-only) and the agents' logs:

  lost      an action id the REST API confirmed that the store does not hold
  doubled   an action id executed more than once by its agent
  phantom   an action an agent executed that the store has never heard of
  open      an action not final after the settling time
  mismatch  a final state that contradicts the agent (sent to it and completed
            without running there, ran but ended expired/cancelled)
  orphans   transitions of an action id the actions table does not hold

Any of them non-zero fails the run (exit 1). Standard library only; run with
/usr/bin/python3 or any python3.

    tests/soak/crash_soak.py --bin-dir build --scenarios config/scenarios --cycles 100
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = "soak-test-password-1"
FINAL = {"completed", "failed", "expired", "cancelled", "reverted"}
REVERSIBLE = {"isolate", "prevent_run", "quarantine"}
START_PROCESS = {
    "windows": ("C:\\Windows\\System32\\whoami.exe", ""),
    "linux": ("/usr/bin/id", "-u"),
}


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    # Below the kernel's ephemeral range (32768-60999), so a client socket never
    # takes it while parryd is down between cycles.
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def wait_for(cond, timeout, what, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    raise RuntimeError(f"timed out waiting for {what}")


class Server:
    """parryd on fixed ports, so restarts keep the URL and the agents' endpoint."""

    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.http_port = free_port()
        self.bus = f"tcp://127.0.0.1:{free_port()}"
        self.enroll = f"tcp://127.0.0.1:{free_port()}"
        self.proc = None
        self.starts = 0
        self.up = threading.Event()
        with open(os.path.join(work, "parryd.toml"), "w") as f:
            f.write("heartbeat_interval_ms = 300\npbkdf2_iterations = 20000\n"
                    "max_login_failures = 1000\n")

    def start(self):
        self.starts += 1
        logf = open(os.path.join(self.work, f"parryd-{self.starts}.log"), "w")
        env = dict(os.environ, PARRY_ADMIN_PASSWORD=PASSWORD)
        self.proc = subprocess.Popen(
            [os.path.join(self.args.bin_dir, "parryd"), "--config",
             os.path.join(self.work, "parryd.toml"), "--data-dir",
             os.path.join(self.work, "data"), "--http-port", str(self.http_port),
             "--bus", self.bus, "--bus-enroll-endpoint", self.enroll,
             "--bus-integrator-endpoint", f"tcp://127.0.0.1:{free_port()}",
             "--bus-events-endpoint", f"tcp://127.0.0.1:{free_port()}",
             "--metrics-port", "0",  # not 9469: tests may run side by side
             "--log-level", "warn"],
            stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"parryd exited {self.proc.returncode}; see "
                                   f"{self.work}/parryd-{self.starts}.log")
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), 0.2):
                    return True
            except OSError:
                return False

        t0 = time.monotonic()
        wait_for(ready, 60, "parryd to listen")
        self.up.set()
        return time.monotonic() - t0

    def kill(self):
        self.up.clear()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.up.clear()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Api:
    """One HTTPS request per connection: a kill cuts at most the request in flight."""

    def __init__(self, server, cafile):
        self.server = server
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.ctx.check_hostname = False
        self.token = None

    def call(self, method, path, body=None, headers=None, timeout=15):
        h = {"Content-Type": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        h.update(headers or {})
        conn = http.client.HTTPSConnection("127.0.0.1", self.server.http_port,
                                           context=self.ctx, timeout=timeout)
        try:
            conn.request(method, "/api/v1" + path,
                         json.dumps(body) if body is not None else None, h)
            r = conn.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data else {})
        finally:
            conn.close()

    def retrying(self, method, path, body=None, headers=None, stats=None):
        """Calls until an answer other than 503 arrives, waiting for the server
        between attempts. Returns (status, body) or None after 20 attempts."""
        for attempt in range(20):
            if not self.server.up.wait(120):
                return None
            try:
                st, b = self.call(method, path, body, headers)
                if st != 503:
                    if attempt > 0 and stats is not None:
                        stats["retried"] += 1
                    return st, b
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.1)
        return None


class Load(threading.Thread):
    """Registers actions of every type, forever, until `stop` is set."""

    def __init__(self, api, seed):
        super().__init__(daemon=True)
        self.api = api
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.confirmed = {}  # action_id -> type, every id the API gave us
        self.by_key = {}  # idempotency key -> action_id
        self.stats = {"posts": 0, "registered": 0, "refused": 0, "retried": 0,
                      "given_up": 0, "reverses": 0, "same_key_answers": 0}
        self.by_type = {}
        self.refusals = {}  # "409 not_applicable" -> count
        self.error = None
        self.n = 0

    def run(self):
        try:
            while not self.stop.is_set():
                if self.rng.random() < 0.2:
                    self.reverse_one()
                else:
                    self.trigger_one()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = repr(e)

    def note(self, action):
        self.confirmed[action["action_id"]] = action["type"]
        self.by_type[action["type"]] = self.by_type.get(action["type"], 0) + 1

    def trigger_one(self):
        r = self.api.retrying("GET", "/incidents?limit=40")
        if not r or r[0] != 200 or not r[1]["incidents"]:
            time.sleep(0.2)
            return
        inc = self.rng.choice(r[1]["incidents"])
        r = self.api.retrying("GET", f"/incidents/{inc['incident_id']}/available-actions")
        if not r or r[0] != 200:
            return
        av = r[1]
        choices = [(t, {"kind": "detection"}) for t in av["device_actions"]]
        for tgt in av["targets"]:
            target = ({"kind": "detection"} if tgt["kind"] == "detection" else
                      {"kind": "event", "event_id": tgt["event_id"]})
            choices += [(t, target) for t in tgt["actions"]]
        if not choices:
            return
        # Every type about equally often, whatever the incidents offer most.
        types = sorted({t for t, _ in choices})
        kind = self.rng.choice(types)
        target = self.rng.choice([g for t, g in choices if t == kind])
        body = {"type": kind, "incident_id": inc["incident_id"], "target": target,
                "params": {}, "comment": "soak"}
        if kind in av["password_required"]:
            body["password"] = PASSWORD
        if kind == "start_process":
            d = self.api.retrying("GET", f"/devices/{av['device_id']}")
            win = d and d[0] == 200 and "windows" in d[1]["device"]["os"].lower()
            path, arg = START_PROCESS["windows" if win else "linux"]
            body["params"] = {"path": path, "arguments": arg}
            body["password"] = PASSWORD
        self.n += 1
        key = f"soak-{os.getpid()}-{self.n}"
        self.stats["posts"] += 1
        r = self.api.retrying("POST", "/actions", body, {"Idempotency-Key": key},
                              self.stats)
        if r is None:
            self.stats["given_up"] += 1
            return
        st, b = r
        if st in (200, 202):
            if st == 200:
                self.stats["same_key_answers"] += 1
            self.by_key[key] = b["action"]["action_id"]
            self.stats["registered"] += 1
            self.note(b["action"])
        else:
            self.refused(st, b)

    def refused(self, status, body):
        self.stats["refused"] += 1
        code = f"{status} {body.get('error', {}).get('code', '?')}"
        self.refusals[code] = self.refusals.get(code, 0) + 1

    def reverse_one(self):
        r = self.api.retrying("GET", "/actions?state=completed&limit=100")
        if not r or r[0] != 200:
            return
        cands = [a for a in r[1]["actions"]
                 if a["type"] in REVERSIBLE and not a.get("reversed_by")]
        if not cands:
            return
        a = self.rng.choice(cands)
        self.stats["posts"] += 1
        r = self.api.retrying("POST", f"/actions/{a['action_id']}/reverse",
                              {"password": PASSWORD, "comment": "soak"},
                              stats=self.stats)
        if r is None:
            self.stats["given_up"] += 1
            return
        st, b = r
        if st == 202:
            self.stats["reverses"] += 1
            self.stats["registered"] += 1
            self.note(b["action"])
        elif st == 409:
            # Maybe our own earlier attempt registered it before the kill: learn
            # the reverse's id from the original, so it is checked like the others.
            g = self.api.retrying("GET", f"/actions/{a['action_id']}")
            rid = g and g[0] == 200 and g[1]["action"].get("reversed_by")
            if rid and rid not in self.confirmed:
                rg = self.api.retrying("GET", f"/actions/{rid}")
                if rg and rg[0] == 200:
                    self.stats["reverses"] += 1
                    self.stats["registered"] += 1
                    self.note(rg[1]["action"])
                    return
            self.refused(st, b)
        else:
            self.refused(st, b)


def start_agents(args, server, work, prefix, count, seed, token):
    logf = open(os.path.join(work, f"agents-{prefix}.log"), "w")
    # Enrolled over CURVE with one many-use token (in the environment, never argv).
    p = subprocess.Popen(
        [os.path.join(args.bin_dir, "parry-agent"), "--sim", str(count), "--server",
         server.bus, "--enroll-server", server.enroll, "--state-dir",
         os.path.join(work, f"state-{prefix}"), "--seed", str(seed), "--id-prefix",
         prefix, "--scenarios", args.scenarios, "--incident-interval-ms",
         str(args.incident_ms)],
        stdout=logf, stderr=subprocess.STDOUT,
        env=dict(os.environ, PARRY_ENROLL_TOKEN=token))
    logf.close()
    return p


EXECUTED = re.compile(r"executed (\S+) (\S+) on (\S+): (.*)$")


def executions(work):
    runs = {}
    for name in os.listdir(work):
        if name.startswith("agents-"):
            with open(os.path.join(work, name), errors="replace") as f:
                for line in f:
                    m = EXECUTED.search(line)
                    if m:
                        runs.setdefault(m.group(1), []).append(
                            (m.group(2), m.group(3), m.group(4)))
    return runs


def open_actions(db_path):
    """Non-final actions in the store by state, e.g. {"sent": 2}."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute(
            "SELECT state, count(*) FROM actions WHERE state NOT IN "
            "('completed','failed','expired','cancelled','reverted') GROUP BY state"))
    finally:
        db.close()


def check(work, load):
    db = sqlite3.connect(f"file:{os.path.join(work, 'data', 'parry.db')}?mode=ro",
                         uri=True)
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT action_id, type, state, result_ok, result_error, device_id FROM actions")}
    orphans = db.execute("SELECT count(DISTINCT action_id) FROM transitions WHERE "
                         "action_id NOT IN (SELECT action_id FROM actions)").fetchone()[0]
    incidents = db.execute("SELECT count(*) FROM incidents").fetchone()[0]
    sent = {r[0] for r in db.execute(
        "SELECT DISTINCT action_id FROM transitions WHERE state IN ('sent', 'acknowledged')")}
    db.close()
    runs = executions(work)
    problems = {"lost": [], "doubled": [], "phantom": [], "open": [], "mismatch": []}
    for aid in load.confirmed:
        if aid not in rows:
            problems["lost"].append(aid)
    for aid, r in runs.items():
        if len(r) > 1:
            problems["doubled"].append(aid)
        if aid not in rows:
            problems["phantom"].append(aid)
    states = {}
    for aid, (typ, state, ok, err, dev) in rows.items():
        states[state] = states.get(state, 0) + 1
        ran = len(runs.get(aid, []))
        if state not in FINAL:
            problems["open"].append(f"{aid} {typ} {state} on {dev}")
        elif state in ("completed", "reverted") and ran == 0 and aid in sent:
            # The server completes a no-op itself ("device already isolated")
            # without sending it; one that went to the agent must have run there.
            problems["mismatch"].append(f"{aid} {typ} {state} but never executed")
        elif state in ("expired", "cancelled") and ran > 0:
            problems["mismatch"].append(f"{aid} {typ} {state} but the agent ran it")
    # Registered while the answer was cut off and not recovered by a retry (a
    # reverse has no idempotency key): not lost, but the client never heard of it.
    unheard = [f"{aid} {r[0]} {r[1]}" for aid, r in rows.items()
               if aid not in load.confirmed]
    noops = sum(1 for aid, r in rows.items()
                if r[1] in ("completed", "reverted") and aid not in runs and aid not in sent)
    return problems, orphans, states, len(rows), incidents, runs, noops, unheard


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", required=True, help="directory of parryd, parry-agent")
    ap.add_argument("--scenarios", required=True, help="scenario directory")
    ap.add_argument("--cycles", type=int, default=100, help="SIGKILLs (default 100)")
    ap.add_argument("--min-up", type=float, default=0.5, help="least seconds up")
    ap.add_argument("--max-up", type=float, default=4.0, help="most seconds up")
    ap.add_argument("--agents", type=int, default=6, help="always-online endpoints")
    ap.add_argument("--offline-agents", type=int, default=3,
                    help="endpoints stopped (SIGSTOP) now and then")
    ap.add_argument("--incident-ms", type=int, default=1500,
                    help="mean ms between incidents per endpoint")
    ap.add_argument("--settle", type=float, default=120, help="seconds to settle")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    random.seed(args.seed)
    work = tempfile.mkdtemp(prefix=f"parry-soak-{os.getpid()}-")
    log(f"seed {args.seed}, {args.cycles} cycles, work dir {work}")
    server = Server(args, work)
    agents = []
    load = None
    stopped = False
    t_start = time.monotonic()
    try:
        startup = [server.start()]
        api = Api(server, os.path.join(work, "data", "tls", "cert.pem"))
        # A session does not survive a restart; a bearer token does.
        c = http.client.HTTPSConnection("127.0.0.1", server.http_port, context=api.ctx)
        c.request("POST", "/api/v1/login",
                  json.dumps({"username": "admin", "password": PASSWORD}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        login = json.loads(r.read())
        assert r.status == 200, login
        cookie = r.getheader("Set-Cookie").split(";")[0]
        c.request("POST", "/api/v1/tokens", json.dumps({"name": "soak"}),
                  {"Content-Type": "application/json", "Cookie": cookie,
                   "X-CSRF-Token": login["csrf_token"]})
        r = c.getresponse()
        tok = json.loads(r.read())
        c.close()
        assert r.status == 201, tok
        api.token = tok["token"]
        st, et = api.call("POST", "/enrollment-tokens",
                          {"ttl_seconds": 3600, "uses": args.agents + args.offline_agents})
        assert st == 201, et

        agents.append(start_agents(args, server, work, "soakA", args.agents, args.seed,
                                   et["token"]))
        offline = start_agents(args, server, work, "soakB", args.offline_agents,
                               args.seed + 1, et["token"])
        agents.append(offline)
        wait_for(lambda: api.call("GET", "/incidents?limit=1")[1].get("incidents"), 60,
                 "a first incident")
        load = Load(api, args.seed)
        load.start()
        db_path = os.path.join(work, "data", "parry.db")
        at_kill = {}
        for cycle in range(1, args.cycles + 1):
            # Now and then group B goes away (stopped, so its journal lives on).
            if not stopped and random.random() < 0.3:
                offline.send_signal(signal.SIGSTOP)
                stopped = True
            elif stopped and random.random() < 0.4:
                offline.send_signal(signal.SIGCONT)
                stopped = False
            time.sleep(random.uniform(args.min_up, args.max_up))
            if load.error:
                raise RuntimeError(f"load thread failed: {load.error}")
            server.kill()
            # What the kill cut off: actions on their way, as the store holds them.
            for state, n in open_actions(db_path).items():
                at_kill[state] = at_kill.get(state, 0) + n
            startup.append(server.start())
            if cycle % 10 == 0 or cycle == args.cycles:
                log(f"cycle {cycle}: {load.stats['registered']} actions registered, "
                    f"{load.stats['retried']} requests retried")
        load.stop.set()
        load.join(60)
        if stopped:
            offline.send_signal(signal.SIGCONT)
            stopped = False
        log("settling: every agent up, no more kills")
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.settle and open_actions(db_path):
            time.sleep(0.5)
        settle = time.monotonic() - t0
        server.stop()
        for p in agents:
            p.send_signal(signal.SIGTERM)
        for p in agents:
            p.wait(30)
        problems, orphans, states, total, incidents, runs, noops, unheard = check(
            work, load)
        elapsed = time.monotonic() - t_start
        log(f"{args.cycles} SIGKILL cycles in {elapsed:.0f} s (seed {args.seed})")
        log(f"parryd restarts: median {sorted(startup)[len(startup) // 2]:.2f} s, "
            f"max {max(startup):.2f} s to listen; settled in {settle:.1f} s")
        log(f"incidents stored: {incidents}; actions stored: {total}; "
            f"executions in agent journals: {sum(len(r) for r in runs.values())}; "
            f"completed by the server without the agent (no-ops): {noops}")
        log(f"REST: {load.stats}; refused: {load.refusals}")
        log(f"open actions at the kills, summed over kills: {at_kill}")
        log(f"confirmed by type: {dict(sorted(load.by_type.items()))}")
        log(f"final states: {dict(sorted(states.items()))}")
        log(f"orphan transitions (action ids): {orphans}")
        log(f"stored but never confirmed to the client: {len(unheard)}" +
            (f"  {unheard[:5]}" if unheard else ""))
        bad = orphans
        for k, v in problems.items():
            log(f"{k}: {len(v)}" + (f"  e.g. {v[:5]}" if v else ""))
            bad += len(v)
        if bad:
            log(f"FAILED; work directory kept: {work}")
            args.keep = True
            return 1
        log("OK: 0 lost, 0 doubled, every action final")
        return 0
    finally:
        if load:
            load.stop.set()
        server.stop()
        for p in agents:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
