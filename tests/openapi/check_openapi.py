#!/usr/bin/python3
"""Checks docs/openapi.yaml against itself, the server's route table and a live parryd.

(a) the document is OpenAPI 3.1 and every `$ref` in it resolves (only local
    `#/...` references are allowed);
(b) every `example`/`examples` (request bodies, responses, parameters, component
    schemas) is valid against its schema (JSON Schema Draft 2020-12, `#/components/...`
    resolved in the document), every component schema is a valid 2020-12 schema, and
    every request body and every 2xx JSON answer has at least one example;
(c) the routes of `const route routes[] = {...}` in actors/api.cpp and the
    operations of the document are the same set (method + path, `{id}`/`{name}`
    standing for any path parameter), plus `GET /openapi.yaml`, which the HTTPS front
    end serves; and each operation's security and `x-parry-roles` match the route's
    `access::` rule (anyone: no security; others: bearer or session, with the CSRF
    header on state-changing calls);
(d) with --bin-dir DIR: starts DIR/parryd on loopback in a temporary data dir (and,
    when DIR/parry-agent exists, two simulated agents, to have devices, incidents and
    actions), signs in with the printed first administrator's password, calls every
    route (GET routes without ids, then with ids taken from the lists, then the
    writes, and a few refusals), and validates each JSON answer against the
    document's schema for its status; a status the document does not list for that
    operation is a problem. Finally GET /api/v1/openapi.yaml must equal the file
    byte for byte, with Content-Type application/yaml.

Exit status 0 and a one-line summary when all is well; 1 and a list of every problem
otherwise; 2 for bad arguments. Needs /usr/bin/python3 with python3-yaml,
python3-jsonschema (Debian bookworm: jsonschema 4.10) and python3-zmq (a CURVE key for
the integrator calls); tests/python/parry_procs.py starts the children.
"""

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import warnings

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from parry_procs import die_with_parent, free_ports  # noqa: E402

try:
    import yaml
except ImportError:  # pragma: no cover
    print("check_openapi: python3-yaml is missing (apt-get install python3-yaml)", file=sys.stderr)
    sys.exit(2)
try:
    import jsonschema
    from jsonschema import Draft202012Validator
except ImportError:  # pragma: no cover
    print("check_openapi: python3-jsonschema is missing (apt-get install python3-jsonschema)",
          file=sys.stderr)
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, os.pardir, os.pardir))
PREFIX = "/api/v1"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Served by the HTTPS front end (server/http_server.cpp), not by the api's route table.
EXTRA_ROUTES = {("GET", "/openapi.yaml"), ("HEAD", "/openapi.yaml")}
ROLES_OF_ACCESS = {
    "anyone": ["anyone"],
    "user": ["administrator", "security_officer", "operator"],
    "actor": ["administrator", "security_officer"],
    "administrator": ["administrator"],
}


class Problems:
    def __init__(self):
        self.items = []

    def add(self, where, text):
        self.items.append("%s: %s" % (where, text))

    def __len__(self):
        return len(self.items)


def short(value, limit=300):
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


# ----------------------------------------------------------------------------- (a)

def load_spec(path, problems):
    try:
        with open(path, "rb") as f:
            raw = f.read()
        spec = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as e:
        problems.add(path, "cannot load: %s" % e)
        return None, None
    if not isinstance(spec, dict):
        problems.add(path, "not a YAML mapping")
        return None, raw
    version = str(spec.get("openapi", ""))
    if not re.fullmatch(r"3\.1\.\d+", version):
        problems.add("openapi", "is %r, expected 3.1.x" % version)
    for key in ("info", "paths", "components"):
        if not isinstance(spec.get(key), dict):
            problems.add(key, "missing or not a mapping")
    info = spec.get("info") or {}
    for key in ("title", "version"):
        if not isinstance(info.get(key), str):
            problems.add("info.%s" % key, "missing or not a string")
    dialect = spec.get("jsonSchemaDialect")
    if dialect is not None and dialect != "https://json-schema.org/draft/2020-12/schema":
        problems.add("jsonSchemaDialect", "is %r; the checks assume Draft 2020-12" % dialect)
    return spec, raw


def pointer_get(doc, ref):
    """Resolves a local reference `#/a/b~1c` in doc; raises KeyError."""
    if not ref.startswith("#"):
        raise KeyError("not a local reference")
    node = doc
    frag = ref[1:]
    if frag in ("", "/"):
        return doc
    if not frag.startswith("/"):
        raise KeyError("not a JSON pointer")
    for part in frag[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(part)
    return node


def walk(node, path=""):
    """Yields (json-path, node) for every mapping and list in node."""
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, (dict, list)):
                yield from walk(v, "%s/%s" % (path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, (dict, list)):
                yield from walk(v, "%s/%d" % (path, i))


def check_refs(spec, problems):
    count = 0
    for where, node in walk(spec):
        if isinstance(node, dict) and "$ref" in node and isinstance(node["$ref"], str):
            # A property *named* $ref would be a dict of its own; this is a reference.
            if "/example" in where or "/examples" in where:
                continue
            count += 1
            ref = node["$ref"]
            if not ref.startswith("#/"):
                problems.add(where or "/", "reference %r is not local (#/...)" % ref)
                continue
            try:
                pointer_get(spec, ref)
            except KeyError as e:
                problems.add(where or "/", "reference %r does not resolve (at %s)" % (ref, e))
    return count


def deref(spec, node, seen=None):
    """Follows Reference Objects (parameters, responses, request bodies, headers)."""
    seen = seen or set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in seen:
            raise KeyError("reference cycle at %s" % ref)
        seen.add(ref)
        node = pointer_get(spec, ref)
    return node


# ----------------------------------------------------------------------------- (b)

class SchemaBox:
    """Validators for schemas inside the document, `#/components/...` resolved."""

    def __init__(self, spec):
        self.spec = spec
        self.resolver = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.resolver = jsonschema.RefResolver(base_uri="", referrer=spec)
        except AttributeError:  # a jsonschema without RefResolver: embed the document
            self.resolver = None

    def validator(self, schema):
        if self.resolver is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return Draft202012Validator(schema, resolver=self.resolver)
        # Refs "#/components/..." resolve against the root of the schema validated:
        # give it the document's components next to the schema itself.
        root = {"components": self.spec.get("components", {}), "allOf": [schema]}
        return Draft202012Validator(root)

    def errors(self, schema, instance):
        v = self.validator(schema)
        out = []
        try:
            found = sorted(v.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
        except Exception as e:  # noqa: BLE001 - RefResolutionError and its successors
            return ["(the schema cannot be used: %s)" % short(str(e), 240)]
        for err in found:
            # For anyOf/oneOf, the closest alternative says more than the whole instance.
            while err.context:
                err = jsonschema.exceptions.best_match(err.context)
            at = "/".join(str(p) for p in err.absolute_path) or "(root)"
            out.append("at %s: %s" % (at, short(err.message, 240)))
        return out


def media_examples(media):
    """(name, value) of a Media Type / Parameter Object's example(s)."""
    out = []
    if "example" in media:
        out.append(("example", media["example"]))
    for name, ex in (media.get("examples") or {}).items():
        if isinstance(ex, dict) and "value" in ex:
            out.append(("examples/%s" % name, ex["value"]))
    return out


def operations(spec):
    for path, item in (spec.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            op = item.get(method)
            if isinstance(op, dict):
                yield path, method, item, op


def check_examples(spec, box, problems):
    counted = {"examples": 0, "schemas": 0}

    def validate(where, schema, value):
        counted["examples"] += 1
        for e in box.errors(schema, value):
            problems.add(where, "example invalid %s" % e)

    # Every component schema is a 2020-12 schema; schema-level `examples` fit it.
    for name, schema in ((spec.get("components") or {}).get("schemas") or {}).items():
        counted["schemas"] += 1
        try:
            Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            problems.add("#/components/schemas/%s" % name, "not a valid 2020-12 schema: %s" % short(e.message))
            continue
        for i, value in enumerate(schema.get("examples") or []):
            validate("#/components/schemas/%s/examples/%d" % (name, i), schema, value)
        if "example" in schema:
            problems.add("#/components/schemas/%s" % name,
                         "uses the OpenAPI 3.0 `example` keyword; use `examples` (a list)")

    def check_content(where, content, need_example):
        for mtype, media in (content or {}).items():
            media = deref(spec, media)
            schema = media.get("schema")
            exs = media_examples(media)
            if schema is None:
                problems.add("%s/%s" % (where, mtype), "no schema")
                continue
            if need_example and not exs:
                problems.add("%s/%s" % (where, mtype), "no example")
            for name, value in exs:
                validate("%s/%s/%s" % (where, mtype, name), schema, value)

    for path, method, item, op in operations(spec):
        here = "%s %s" % (method.upper(), path)
        params = list(item.get("parameters") or []) + list(op.get("parameters") or [])
        for p in params:
            try:
                p = deref(spec, p)
            except KeyError:
                continue  # reported by check_refs
            for name, value in media_examples(p):
                if "schema" in p:
                    validate("%s parameter %s %s" % (here, p.get("name"), name), p["schema"], value)
        if "requestBody" in op:
            body = deref(spec, op["requestBody"])
            if not body.get("content"):
                problems.add(here, "requestBody without content")
            check_content("%s requestBody" % here, body.get("content"), True)
        responses = op.get("responses") or {}
        if not responses:
            problems.add(here, "no responses")
        for status, resp in responses.items():
            try:
                resp = deref(spec, resp)
            except KeyError:
                continue
            if "description" not in resp:
                problems.add("%s %s" % (here, status), "response without description")
            need = str(status) in ("200", "201", "202") and method != "head"
            if need and not resp.get("content"):
                problems.add("%s %s" % (here, status), "no content")
            check_content("%s %s" % (here, status), resp.get("content"), need)
            for hname, header in (resp.get("headers") or {}).items():
                header = deref(spec, header)
                for name, value in media_examples(header):
                    validate("%s %s header %s %s" % (here, status, hname, name), header.get("schema", {}), value)
            if str(status)[0] in "45" and resp.get("content"):
                schema = (resp["content"].get("application/json") or {}).get("schema")
                if schema != {"$ref": "#/components/schemas/Error"}:
                    problems.add("%s %s" % (here, status), "an error answer whose schema is not #/components/schemas/Error")
    for name, resp in ((spec.get("components") or {}).get("responses") or {}).items():
        check_content("#/components/responses/%s" % name, resp.get("content"), False)
    return counted


# ----------------------------------------------------------------------------- (c)

ROUTE_RE = re.compile(
    r'\{\s*"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)"\s*,\s*"([^"]+)"\s*,\s*access::(\w+)\s*,\s*(\w+)\s*\}')


def read_routes(path, problems):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        problems.add(path, "cannot read: %s" % e)
        return []
    m = re.search(r"const\s+route\s+routes\s*\[\s*\]\s*=\s*\{(.*?)\n\};", text, re.S)
    if not m:
        problems.add(path, "no `const route routes[] = {...};` table found")
        return []
    routes = [(meth, pat, acc, fn) for meth, pat, acc, fn in ROUTE_RE.findall(m.group(1))]
    if not routes:
        problems.add(path, "the route table has no rows the pattern understands")
    return routes


def shape(path):
    """`/users/{username}` -> `/users/{}`: path parameters compared by position only."""
    return re.sub(r"\{[^/}]*\}", "{}", path)


def check_routes(spec, routes, problems):
    table = {}
    for meth, pat, acc, fn in routes:
        key = (meth, shape(pat))
        if key in table:
            problems.add("route table", "%s %s appears twice" % (meth, pat))
        table[key] = (pat, acc, fn)
    described = {}
    for path, method, item, op in operations(spec):
        key = (method.upper(), shape(path))
        if key in described:
            problems.add("%s %s" % (method.upper(), path),
                         "described twice (also as %s)" % described[key][0])
        described[key] = (path, item, op)
        # Every {param} of the path is declared as a path parameter, and no other.
        names = set(re.findall(r"\{([^/}]+)\}", path))
        declared = set()
        for p in list(item.get("parameters") or []) + list(op.get("parameters") or []):
            try:
                p = deref(spec, p)
            except KeyError:
                continue
            if p.get("in") == "path":
                declared.add(p.get("name"))
                if p.get("required") is not True:
                    problems.add("%s %s" % (method.upper(), path), "path parameter %s is not required: true" % p.get("name"))
        if names != declared:
            problems.add("%s %s" % (method.upper(), path),
                         "path parameters %s but declared %s" % (sorted(names), sorted(declared)))
    extra = {(m, shape(p)) for m, p in EXTRA_ROUTES}
    for key, (pat, acc, fn) in sorted(table.items()):
        if key not in described:
            problems.add("route table", "%s %s (%s) is not described in the spec" % (key[0], pat, fn))
    for key, (path, item, op) in sorted(described.items()):
        if key not in table and key not in extra:
            problems.add("%s %s" % (key[0], path), "described, but the server has no such route")
    for key in sorted(extra):
        if key not in described:
            problems.add("%s %s" % key, "served by the front end but not described")

    # Access rules against security and x-parry-roles.
    global_security = spec.get("security")
    for key, (path, item, op) in sorted(described.items()):
        where = "%s %s" % (key[0], path)
        if key not in table and key not in extra:
            continue  # reported above
        acc = table[key][1] if key in table else "anyone"
        security = op.get("security", global_security)
        roles = op.get("x-parry-roles")
        if roles != ROLES_OF_ACCESS.get(acc):
            problems.add(where, "x-parry-roles %r, but the route is access::%s (%r)"
                         % (roles, acc, ROLES_OF_ACCESS.get(acc)))
        if acc == "anyone":
            if security not in ([], [{}]):
                problems.add(where, "the route needs no authentication; security should be []")
            continue
        if not security:
            problems.add(where, "the route needs a session or token; security is empty")
            continue
        alts = [frozenset(s.keys()) for s in security]
        if frozenset({"bearerToken"}) not in alts:
            problems.add(where, "security does not offer the bearer token alone")
        session = [a for a in alts if "sessionCookie" in a]
        if not session:
            problems.add(where, "security does not offer the session cookie")
        elif key[0] == "GET" and frozenset({"sessionCookie"}) not in session:
            problems.add(where, "a GET with the session cookie needs no CSRF header")
        elif key[0] != "GET" and frozenset({"sessionCookie", "csrfToken"}) not in session:
            problems.add(where, "a %s with the session cookie needs the X-CSRF-Token header (csrfToken)" % key[0])
    schemes = ((spec.get("components") or {}).get("securitySchemes") or {})
    expect = {"sessionCookie": ("apiKey", "cookie", "parry_session"),
              "csrfToken": ("apiKey", "header", "X-CSRF-Token")}
    for name, (typ, where_in, pname) in expect.items():
        s = schemes.get(name) or {}
        if (s.get("type"), s.get("in"), s.get("name")) != (typ, where_in, pname):
            problems.add("#/components/securitySchemes/%s" % name, "expected %s in %s named %s" % (typ, where_in, pname))
    b = schemes.get("bearerToken") or {}
    if (b.get("type"), str(b.get("scheme", "")).lower()) != ("http", "bearer"):
        problems.add("#/components/securitySchemes/bearerToken", "expected type http, scheme bearer")
    return len(table), len(described)


# ----------------------------------------------------------------------------- (d)

class Answer:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.doc = None
        self.json_error = None
        if raw:
            try:
                self.doc = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                self.json_error = str(e)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all_headers(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Live:
    """Runs parryd (and simulated agents) and checks its answers against the spec."""

    def __init__(self, spec, raw_spec, box, problems, bin_dir, keep):
        self.spec = spec
        self.raw_spec = raw_spec
        self.box = box
        self.problems = problems
        self.bin_dir = bin_dir
        self.keep = keep
        self.tmp = tempfile.mkdtemp(prefix="parry-openapi-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.procs = []
        self.calls = 0
        self.checked = set()   # (METHOD, spec path, status) seen live
        self.bearer = None
        self.cookie = None
        self.csrf = None
        self.templates = []
        for path, method, item, op in operations(spec):
            rx = "^" + re.sub(r"\\\{[^/}]+\\\}", "[^/]+", re.escape(path)) + "$"
            self.templates.append((re.compile(rx), path, method.upper(), op))

    # -------------------------------------------------------------- processes

    def start(self, name, argv, env_extra=None):
        log_path = os.path.join(self.tmp, name + ".log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARRY_")}
        env.update(env_extra or {})
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
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

    def log_tail(self, lines=30):
        out = []
        for name, proc, path in self.procs:
            try:
                with open(path, "rb") as f:
                    text = f.read()[-32768:].decode("utf-8", "replace").splitlines()
            except OSError:
                text = []
            out.append("----- %s (exit %s), last lines of %s" % (name, proc.poll(), path))
            out.extend(text[-lines:])
        return "\n".join(out)

    def cleanup(self):
        self.stop_all()
        if self.keep:
            print("check_openapi: kept %s" % self.tmp, flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -------------------------------------------------------------- HTTP

    def request(self, method, path, body=None, auth="bearer", headers=None, raw_body=None,
                csrf=True, timeout=30):
        """One HTTPS request to /api/v1 + path on loopback; returns an Answer."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=timeout)
        hdrs = {"Accept": "application/json"}
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode("utf-8")
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        if auth == "bearer" and self.bearer:
            hdrs["Authorization"] = "Bearer " + self.bearer
        elif auth == "session" and self.cookie:
            hdrs["Cookie"] = self.cookie
            if method != "GET" and csrf:
                hdrs["X-CSRF-Token"] = self.csrf
        hdrs.update(headers or {})
        try:
            conn.request(method, PREFIX + path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            return Answer(resp.status, resp.getheaders(), raw)
        finally:
            conn.close()
            self.calls += 1

    def operation(self, method, path):
        bare = path.split("?", 1)[0]
        for rx, tpath, tmethod, op in self.templates:
            if tmethod == method and rx.match(bare):
                return tpath, op
        return None, None

    def call(self, method, path, body=None, expect=None, **kw):
        """Calls, then validates the answer against the spec; returns the Answer."""
        try:
            ans = self.request(method, path, body, **kw)
        except (OSError, http.client.HTTPException) as e:
            self.problems.add("live %s %s" % (method, path), "request failed: %s" % e)
            return None
        self.validate(method, path, ans)
        if expect is not None and ans.status not in (expect if isinstance(expect, tuple) else (expect,)):
            self.problems.add("live %s %s" % (method, path),
                              "expected %s, got %d: %s" % (expect, ans.status, short(ans.raw.decode("utf-8", "replace"))))
        return ans

    def validate(self, method, path, ans):
        where = "live %s %s -> %d" % (method, path, ans.status)
        tpath, op = self.operation(method, path)
        if op is None:
            # Only a refusal of the router can answer a method or path the spec lacks.
            if ans.status in (404, 405):
                self.check_schema(where, {"$ref": "#/components/schemas/Error"}, ans)
                if ans.status == 405 and not ans.header("Allow"):
                    self.problems.add(where, "405 without an Allow header")
            else:
                self.problems.add(where, "no operation in the spec for this method and path")
            return
        responses = op.get("responses") or {}
        resp = responses.get(str(ans.status)) or responses.get(ans.status)
        if resp is None:
            resp = responses.get("%dXX" % (ans.status // 100)) or responses.get("default")
        if resp is None:
            self.problems.add(where, "status %d is not described for %s %s (answer: %s)"
                              % (ans.status, method, tpath, short(ans.raw.decode("utf-8", "replace"))))
            return
        self.checked.add((method, tpath, ans.status))
        resp = deref(self.spec, resp)
        content = resp.get("content") or {}
        ctype = (ans.header("Content-Type") or "").split(";")[0].strip()
        if not content:
            return
        if ctype not in content:
            self.problems.add(where, "Content-Type %r, the spec has %s" % (ctype, sorted(content)))
            return
        if ctype == "application/json":
            self.check_schema(where, content[ctype].get("schema", {}), ans)
        for hname, header in (resp.get("headers") or {}).items():
            header = deref(self.spec, header)
            if header.get("required") and ans.header(hname) is None:
                self.problems.add(where, "header %s missing" % hname)

    def check_schema(self, where, schema, ans):
        if ans.json_error is not None or ans.doc is None:
            self.problems.add(where, "the body is not JSON (%s): %s"
                              % (ans.json_error or "empty", short(ans.raw.decode("utf-8", "replace"))))
            return
        for e in self.box.errors(schema, ans.doc):
            self.problems.add(where, "answer does not fit the spec %s" % e)

    # -------------------------------------------------------------- the run

    def poll(self, what, fn, timeout, interval=0.2):
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() >= deadline:
                self.problems.add("live", "timed out after %.0f s waiting for %s" % (timeout, what))
                return None
            time.sleep(interval)

    def run(self):
        parryd = os.path.join(self.bin_dir, "parryd")
        if not (os.path.isfile(parryd) and os.access(parryd, os.X_OK)):
            self.problems.add("live", "no executable parryd in %s" % self.bin_dir)
            return
        http_port, bus, enroll, integ, events = free_ports(5)
        config = os.path.join(self.tmp, "parryd.toml")
        with open(config, "w") as f:
            f.write("pbkdf2_iterations = 20000\nheartbeat_interval_ms = 300\n"
                    "http_address = \"127.0.0.1\"\n")
        self.bus_ep = "tcp://127.0.0.1:%d" % bus
        self.enroll_ep = "tcp://127.0.0.1:%d" % enroll
        argv = [parryd, "--config", config, "--data-dir", self.data_dir,
                "--http-port", str(http_port), "--bus", self.bus_ep,
                "--bus-enroll-endpoint", self.enroll_ep,
                "--bus-integrator-endpoint", "tcp://127.0.0.1:%d" % integ,
                "--bus-events-endpoint", "tcp://127.0.0.1:%d" % events]
        # A parryd with a metrics listener: on loopback, on a free port.
        try:
            helptext = subprocess.run([parryd, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=20).stdout.decode("utf-8", "replace")
        except (OSError, subprocess.TimeoutExpired):
            helptext = ""
        if "--metrics-port" in helptext:
            argv += ["--metrics-port", "0"]
            if "--metrics-address" in helptext:
                argv += ["--metrics-address", "127.0.0.1"]
        proc, log_path = self.start("parryd", argv)

        def ready():
            if proc.poll() is not None:
                return "exited"
            with open(log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            if "parryd ready" not in text:
                return None
            after = text.split("parryd ready", 1)[1]
            m = re.search(r"first administrator: (\S+) / (\S+)", after)
            rest = re.search(r"REST\s+https://127\.0\.0\.1:(\d+)/api/v1", after)
            return (m.group(1), m.group(2), int(rest.group(1))) if m and rest else None
        got = self.poll("parryd to print `parryd ready`, its REST port and the first administrator", ready, 60, 0.05)
        if got == "exited" or not got:
            self.problems.add("live", "parryd did not start:\n" + self.log_tail())
            return
        admin, password, self.port = got
        cert = os.path.join(self.data_dir, "tls", "cert.pem")
        self.ctx = ssl.create_default_context(cafile=cert)
        self.ctx.check_hostname = False   # the certificate names the host, not 127.0.0.1 necessarily
        self.admin = admin
        self.password = password
        self.exercise()

    def exercise(self):
        c = self.call
        # -- without credentials
        c("GET", "/health", auth=None, expect=200)
        c("GET", "/session", auth=None, expect=401)
        c("GET", "/devices", auth=None, expect=401)
        c("GET", "/users", auth="bearer", headers={"Authorization": "Bearer " + "0" * 64}, expect=401)
        c("POST", "/login", {"username": self.admin, "password": "not-the-password-1"}, auth=None, expect=401)
        c("POST", "/login", raw_body=b"{\"username\": 1}", auth=None, expect=400)
        # -- a session
        ans = c("POST", "/login", {"username": self.admin, "password": self.password}, auth=None, expect=200)
        if ans is None or ans.status != 200 or not isinstance(ans.doc, dict):
            self.problems.add("live", "cannot sign in as %s; the rest is skipped" % self.admin)
            return
        for value in ans.all_headers("Set-Cookie"):
            m = re.match(r"\s*(parry_session=[^;]*)", value)
            if m:
                self.cookie = m.group(1)
        if not self.cookie:
            self.problems.add("live POST /login", "no parry_session cookie set")
            return
        self.csrf = ans.doc.get("csrf_token", "")
        c("GET", "/session", auth="session", expect=200)
        c("POST", "/tokens", {"name": "no-csrf"}, auth="session", csrf=False, expect=403)
        ans = c("POST", "/tokens", {"name": "openapi-check", "expires_in": 3600}, auth="session", expect=201)
        if ans is None or ans.status != 201:
            self.problems.add("live", "cannot make a bearer token; the rest is skipped")
            return
        self.bearer = ans.doc["token"]
        c("GET", "/session", expect=200)
        c("POST", "/tokens", {"expires_in": 10 ** 12}, expect=400)
        spare = c("POST", "/tokens", {}, expect=201)

        # -- every GET without an id
        for path in ("/health", "/session", "/tokens", "/devices", "/incidents", "/actions",
                     "/audit", "/users", "/stats", "/enrollment-tokens", "/bus-keys"):
            c("GET", path, expect=200)
        c("GET", "/events", expect=426)
        c("GET", "/events", auth="session", expect=426)
        self.websocket()
        self.websocket(origin="https://elsewhere.example", expect=403)
        self.websocket(auth=None, expect=401)
        # paging and filters
        page = c("GET", "/audit?limit=2", expect=200)
        if page and page.status == 200 and page.doc.get("next_cursor"):
            c("GET", "/audit?limit=2&cursor=" + page.doc["next_cursor"], expect=200)
        else:
            self.problems.add("live GET /audit?limit=2", "expected a next_cursor (the trail has > 2 records)")
        c("GET", "/audit?after=1&limit=1", expect=200)
        c("GET", "/users?limit=1", expect=200)
        c("GET", "/incidents?severity=high&status=new&since=2020-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B01:00", expect=200)
        c("GET", "/actions?state=completed&device_id=none&incident_id=none", expect=200)
        c("GET", "/devices?limit=0", expect=400)
        c("GET", "/incidents?since=yesterday", expect=400)
        c("GET", "/users?cursor=zz", expect=400)
        c("GET", "/audit?after=-1", expect=400)
        # unknown ids and paths, other methods
        c("GET", "/devices/no-such-device", expect=404)
        c("GET", "/incidents/inc-00000000000000000000", expect=404)
        c("GET", "/incidents/inc-00000000000000000000/available-actions", expect=404)
        c("GET", "/actions/act-000000000000000000000000", expect=404)
        c("GET", "/incidents/bad%20id", expect=404)
        c("GET", "/no-such-endpoint", expect=404)
        c("DELETE", "/health", expect=405)
        c("PUT", "/users/someone", expect=405)

        # -- users
        user = "openapi-check-user"
        upw = "openapi-check-password-1"
        c("POST", "/users", {"username": user, "password": upw, "role": "operator"}, expect=201)
        c("POST", "/users", {"username": user, "password": upw, "role": "operator"}, expect=409)
        c("POST", "/users", {"username": "bad name", "password": upw, "role": "operator"}, expect=400)
        c("PATCH", "/users/" + user, {"role": "nobody"}, expect=400)
        c("PATCH", "/users/no-such-user", {"disabled": True}, expect=404)
        c("PATCH", "/users/" + self.admin, {"disabled": True}, expect=409)
        # the operator may read, not administer or act
        saved = self.bearer
        op_login = c("POST", "/login", {"username": user, "password": upw}, auth=None, expect=200)
        op_token = None
        if op_login and op_login.status == 200:
            jar = [m.group(1) for v in op_login.all_headers("Set-Cookie")
                   for m in [re.match(r"\s*(parry_session=[^;]*)", v)] if m]
            saved_cookie, saved_csrf = self.cookie, self.csrf
            self.cookie, self.csrf = (jar[0] if jar else None), op_login.doc.get("csrf_token")
            t = c("POST", "/tokens", {"name": "operator"}, auth="session", expect=201)
            op_token = t.doc["token"] if t and t.status == 201 else None
            c("POST", "/logout", auth="session", expect=200)
            c("GET", "/session", auth="session", expect=401)
            self.cookie, self.csrf = saved_cookie, saved_csrf
        if op_token:
            self.bearer = op_token
            c("GET", "/users", expect=403)
            c("GET", "/audit", expect=403)
            c("POST", "/actions", {"type": "isolate", "incident_id": "inc-1", "target": {"kind": "detection"}}, expect=403)
            c("GET", "/tokens", expect=200)
            self.bearer = saved
        c("PATCH", "/users/" + user, {"role": "security_officer", "password": upw + "x"}, expect=200)

        # -- integrators and bus keys
        key = zmq.curve_keypair()[0].decode()
        c("POST", "/integrators", {"name": "openapi-check", "role": "operator", "public_key": key}, expect=201)
        c("POST", "/integrators", {"name": "other", "role": "operator", "public_key": key}, expect=409)
        c("POST", "/integrators", {"name": "bad", "role": "operator", "public_key": "short"}, expect=400)
        # the same name and key with another role changes the role (actors/bus_keys.cpp)
        c("POST", "/integrators", {"name": "openapi-check", "role": "security_officer", "public_key": key}, expect=201)
        c("GET", "/bus-keys", expect=200)
        c("DELETE", "/integrators/openapi-check", expect=200)
        c("DELETE", "/integrators/openapi-check", expect=404)

        # -- enrollment tokens (and agents, when the binary is there)
        tok = c("POST", "/enrollment-tokens", {"ttl_seconds": 600, "uses": 2}, expect=201)
        c("POST", "/enrollment-tokens", {"ttl_seconds": 0}, expect=400)
        c("POST", "/enrollment-tokens", {"ttl_seconds": 60, "uses": 100001}, expect=400)
        extra = c("POST", "/enrollment-tokens", {"ttl_seconds": 60}, expect=201)
        c("GET", "/enrollment-tokens", expect=200)
        if extra and extra.status == 201:
            c("DELETE", "/enrollment-tokens/" + extra.doc["token_id"], expect=200)
            c("DELETE", "/enrollment-tokens/" + extra.doc["token_id"], expect=404)
        agent = os.path.join(self.bin_dir, "parry-agent")
        if tok and tok.status == 201 and os.access(agent, os.X_OK):
            self.with_agents(agent, tok.doc["token"])
        else:
            print("check_openapi: no parry-agent in %s: devices, incidents and actions stay empty"
                  % self.bin_dir, flush=True)

        # -- tokens, the new user, the stream of this session
        if spare and spare.status == 201:
            c("DELETE", "/tokens/" + spare.doc["token_id"], expect=200)
            c("DELETE", "/tokens/" + spare.doc["token_id"], expect=404)
        c("DELETE", "/users/" + user, expect=200)
        c("DELETE", "/users/" + user, expect=404)
        c("DELETE", "/users/" + self.admin, expect=409)
        self.too_large("/login")
        c("GET", "/stats", expect=200)
        # -- a backup: the database file itself, then the audit record of it
        b = c("POST", "/backup", expect=200, timeout=120)
        if b is not None and b.status == 200 and not b.raw.startswith(b"SQLite format 3\x00"):
            self.problems.add("live POST /backup", "the body is not an SQLite database")
        c("GET", "/backup", expect=405)
        c("GET", "/audit", expect=200)

        # -- this document, served by the server
        self.check_served_spec()

        c("POST", "/logout", auth="session", expect=200)
        c("GET", "/session", auth="session", expect=401)
        c("POST", "/logout", expect=200)
        c("GET", "/session", expect=401)

    def with_agents(self, agent, enroll_token):
        c = self.call
        scenarios = os.path.join(ROOT, "config", "scenarios")
        self.start("parry-agent", [
            agent, "--sim", "2", "--server", self.bus_ep, "--enroll-server", self.enroll_ep,
            "--state-dir", os.path.join(self.tmp, "agent-state"), "--scenarios", scenarios,
            "--incident-interval-ms", "300", "--incidents", "2",
        ], {"PARRY_ENROLL_TOKEN": enroll_token})

        def incidents():
            a = self.request("GET", "/incidents")
            return a.doc["incidents"] if a.status == 200 and a.doc.get("incidents") else None
        if not self.poll("an incident from the simulated agents", incidents, 40):
            print(self.log_tail(), flush=True)
            return
        devs = c("GET", "/devices", expect=200)
        c("GET", "/devices?limit=1", expect=200)
        if devs and devs.status == 200:
            for d in devs.doc["devices"][:2]:
                c("GET", "/devices/" + d["device_id"], expect=200)
        incs = c("GET", "/incidents", expect=200)
        c("GET", "/incidents?limit=1", expect=200)
        newest = None
        if incs and incs.status == 200:
            for inc in incs.doc["incidents"][:4]:
                c("GET", "/incidents/" + inc["incident_id"], expect=200)
                c("GET", "/incidents/%s/available-actions" % inc["incident_id"], expect=200)
                c("GET", "/incidents?device_id=" + inc["device_id"], expect=200)
            newest = incs.doc["incidents"][0]
        c("GET", "/bus-keys", expect=200)
        c("GET", "/stats", expect=200)
        if not newest:
            return
        iid = newest["incident_id"]
        # refusals
        c("POST", "/actions", {"type": "bogus", "incident_id": iid, "target": {"kind": "detection"}}, expect=400)
        c("POST", "/actions", {"type": "isolate", "incident_id": iid, "target": {"kind": "event", "event_id": "no-such"}}, expect=404)
        c("POST", "/actions", {"type": "quarantine", "incident_id": iid, "target": {"kind": "detection"}}, expect=(401, 409))
        c("POST", "/actions", {"type": "isolate", "incident_id": "inc-00000000000000000000", "target": {"kind": "detection"}}, expect=404)
        c("POST", "/actions", {"type": "release_isolation", "incident_id": iid, "target": {"kind": "detection"}}, expect=(202, 409))
        # bulk: refused whole, then one incident known and one not
        c("POST", "/actions/bulk", {"type": "isolate", "targets": []}, expect=400)
        c("POST", "/actions/bulk", {"type": "isolate", "targets": [
            {"incident_id": "inc-00000000000000000000", "target": {"kind": "detection"}},
            {"incident_id": iid, "target": {"kind": "detection"}}]}, expect=202)
        # isolate, idempotent replay, cancel refused once final, reverse
        key = {"Idempotency-Key": "openapi-check-" + secrets.token_hex(4)}
        reg = c("POST", "/actions", {"type": "isolate", "incident_id": iid, "target": {"kind": "detection"},
                                     "comment": "openapi check"}, headers=key, expect=202)
        if not reg or reg.status != 202:
            return
        aid = reg.doc["action"]["action_id"]
        c("POST", "/actions", {"type": "isolate", "incident_id": iid, "target": {"kind": "detection"}}, headers=key, expect=200)

        def final(action_id):
            a = self.request("GET", "/actions/" + action_id)
            return a.doc["action"] if a.status == 200 and a.doc["action"].get("final") else None
        done = self.poll("action %s to be final" % aid, lambda: final(aid), 30)
        c("GET", "/actions/" + aid, expect=200)
        c("GET", "/actions", expect=200)
        c("GET", "/actions?limit=1", expect=200)
        c("GET", "/actions?incident_id=" + iid, expect=200)
        c("POST", "/actions/%s/cancel" % aid, {"comment": "too late"}, expect=409)
        if done and done["state"] == "completed":
            c("GET", "/incidents/%s/available-actions" % iid, expect=200)
            rev = c("POST", "/actions/%s/reverse" % aid, {"comment": "openapi check"}, expect=202)
            c("POST", "/actions/%s/reverse" % aid, {}, expect=409)
            if rev and rev.status == 202:
                rid = rev.doc["action"]["action_id"]
                self.poll("reverse %s to be final" % rid, lambda: final(rid), 30)
                c("GET", "/actions/" + rid, expect=200)
                c("GET", "/actions/" + aid, expect=200)
        else:
            self.problems.add("live", "isolate %s ended %s, not completed; reverse not tried"
                              % (aid, done and done["state"]))
        c("POST", "/actions/%s/reverse" % "act-000000000000000000000000", {}, expect=404)
        c("POST", "/actions/%s/cancel" % "act-000000000000000000000000", {}, expect=404)
        # a cancel that comes in time: isolate the other device, cancel at once
        other = next((i for i in (incs.doc["incidents"] if incs else []) if i["device_id"] != newest["device_id"]), None)
        if other:
            r2 = c("POST", "/actions", {"type": "isolate", "incident_id": other["incident_id"],
                                        "target": {"kind": "detection"}}, expect=202)
            if r2 and r2.status == 202:
                c("POST", "/actions/%s/cancel" % r2.doc["action"]["action_id"], {"comment": "openapi check"},
                  expect=(200, 409))
                c("GET", "/actions/" + r2.doc["action"]["action_id"], expect=200)
        c("GET", "/audit?limit=10000", expect=200)
        devs = self.request("GET", "/devices")
        if devs.status == 200 and devs.doc["devices"]:
            # The device whose isolation was reversed above: not isolated, so an
            # isolate on it must wait for the agent. (The other device may be isolated
            # already, when the cancel above came too late; an isolate there completes
            # at once as a no-op and cannot be cancelled.)
            did = newest["device_id"] if newest else devs.doc["devices"][-1]["device_id"]
            c("DELETE", "/devices/%s/key" % did, expect=200)
            c("DELETE", "/devices/%s/key" % did, expect=404)
            # Revoked, the device goes offline: an action on it waits (queued) and can be
            # cancelled.
            def offline():
                a = self.request("GET", "/devices/" + did)
                return a.status == 200 and not a.doc["device"]["online"]
            inc = next((i for i in (incs.doc["incidents"] if incs else []) if i["device_id"] == did), None)
            if inc and self.poll("device %s to go offline after its key was revoked" % did, offline, 15):
                r3 = c("POST", "/actions", {"type": "isolate", "incident_id": inc["incident_id"],
                                            "target": {"kind": "detection"}}, expect=202)
                if r3 and r3.status == 202:
                    c("POST", "/actions/%s/cancel" % r3.doc["action"]["action_id"], {"comment": "openapi check"},
                      expect=200)
                    c("GET", "/actions/" + r3.doc["action"]["action_id"], expect=200)

    def websocket(self, origin=None, auth="bearer", expect=101):
        """GET /events with the upgrade headers: 101 and a `hello` frame, or a refusal."""
        import base64
        where = "live GET /events (WebSocket%s%s)" % (", Origin " + origin if origin else "",
                                                      ", no credentials" if auth is None else "")
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        try:
            sock = self.ctx.wrap_socket(raw, server_hostname="localhost")
            host = "127.0.0.1:%d" % self.port
            lines = ["GET %s/events HTTP/1.1" % PREFIX, "Host: " + host, "Upgrade: websocket",
                     "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                     "Sec-WebSocket-Key: " + base64.b64encode(secrets.token_bytes(16)).decode()]
            if origin:
                lines.append("Origin: " + origin)
            if auth == "bearer" and self.bearer:
                lines.append("Authorization: Bearer " + self.bearer)
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
            head, _, rest = buf.partition(b"\r\n\r\n")
            head_lines = head.decode("latin-1").split("\r\n")
            status = int(head_lines[0].split()[1]) if head_lines and len(head_lines[0].split()) > 1 else 0
            headers = [tuple(x.strip() for x in h.split(":", 1)) for h in head_lines[1:] if ":" in h]
            if status != expect:
                self.problems.add(where, "expected %d, got %r" % (expect, head_lines[0] if head_lines else ""))
            if status != 101:
                length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
                while len(rest) < length:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    rest += chunk
                ans = Answer(status, headers, rest[:length])
                self.validate("GET", "/events", ans)
                return
            self.checked.add(("GET", "/events", 101))

            def need(n):
                nonlocal rest
                while len(rest) < n:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise OSError("the stream closed")
                    rest += chunk
                out, rest = rest[:n], rest[n:]
                return out
            for _ in range(10):
                b0, b1 = need(2)
                n = b1 & 0x7f
                if n == 126:
                    n = int.from_bytes(need(2), "big")
                elif n == 127:
                    n = int.from_bytes(need(8), "big")
                if b1 & 0x80:
                    need(4)  # a server never masks; skip it all the same
                payload = need(n)
                if b0 & 0x0f == 0x1:
                    doc = json.loads(payload.decode("utf-8"))
                    for e in self.box.errors({"$ref": "#/components/schemas/StreamMessage"}, doc):
                        self.problems.add(where, "first message does not fit StreamMessage %s" % e)
                    if doc.get("type") != "hello":
                        self.problems.add(where, "the first message is %r, not a hello" % short(doc))
                    return
            self.problems.add(where, "no text frame among the first 10 frames")
        except (OSError, ValueError, ssl.SSLError) as e:
            self.problems.add(where, "failed: %s" % e)
        finally:
            raw.close()
            self.calls += 1

    def too_large(self, path):
        """A body over 1 MiB: announced by Content-Length, refused before it is sent."""
        where = "live POST %s (2 MiB body)" % path
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
        try:
            conn.putrequest("POST", PREFIX + path)
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(2 << 20))
            conn.endheaders()
            resp = conn.getresponse()
            ans = Answer(resp.status, resp.getheaders(), resp.read())
        except (OSError, http.client.HTTPException) as e:
            self.problems.add(where, "request failed: %s" % e)
            return
        finally:
            conn.close()
            self.calls += 1
        self.validate("POST", path, ans)
        if ans.status != 413:
            self.problems.add(where, "expected 413, got %d" % ans.status)

    def check_served_spec(self):
        where = "live GET /api/v1/openapi.yaml"
        try:
            ans = self.request("GET", "/openapi.yaml", auth=None, headers={"Accept": "application/yaml"})
        except (OSError, http.client.HTTPException) as e:
            self.problems.add(where, "request failed: %s" % e)
            return
        if ans.status != 200:
            self.problems.add(where, "NOT SERVED YET: status %d (%s); the server must serve docs/openapi.yaml "
                              "here without authentication, as application/yaml"
                              % (ans.status, short(ans.raw.decode("utf-8", "replace"), 120)))
            return
        self.checked.add(("GET", "/openapi.yaml", 200))
        ctype = (ans.header("Content-Type") or "").split(";")[0].strip()
        if ctype != "application/yaml":
            self.problems.add(where, "Content-Type %r, expected application/yaml" % ctype)
        if ans.raw != self.raw_spec:
            self.problems.add(where, "differs from docs/openapi.yaml (%d bytes served, %d in the file)"
                              % (len(ans.raw), len(self.raw_spec)))
        where = "live HEAD /api/v1/openapi.yaml"
        try:
            ans = self.request("HEAD", "/openapi.yaml", auth=None)
        except (OSError, http.client.HTTPException) as e:
            self.problems.add(where, "request failed: %s" % e)
            return
        if ans.status != 200:
            self.problems.add(where, "status %d, expected 200" % ans.status)
            return
        self.checked.add(("HEAD", "/openapi.yaml", 200))
        if ans.header("Content-Length") != str(len(self.raw_spec)):
            self.problems.add(where, "Content-Length %r, the file has %d bytes"
                              % (ans.header("Content-Length"), len(self.raw_spec)))


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=os.path.join(ROOT, "docs", "openapi.yaml"))
    ap.add_argument("--routes", default=os.path.join(ROOT, "actors", "api.cpp"))
    ap.add_argument("--bin-dir", help="a build directory with parryd (and parry-agent): check a live server too")
    ap.add_argument("--keep", action="store_true", help="keep the live run's temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="list the (operation, status) pairs checked live")
    args = ap.parse_args()

    started = time.monotonic()
    problems = Problems()
    spec, raw = load_spec(args.spec, problems)
    if spec is None:
        print("\n".join(problems.items), file=sys.stderr)
        print("FAIL: %s cannot be read" % args.spec)
        return 1
    refs = check_refs(spec, problems)
    box = SchemaBox(spec)
    counted = check_examples(spec, box, problems)
    routes = read_routes(args.routes, problems)
    n_routes, n_ops = check_routes(spec, routes, problems)

    live_text = "no live check (no --bin-dir)"
    if args.bin_dir:
        live = Live(spec, raw, box, problems, os.path.abspath(args.bin_dir), args.keep)
        before = len(problems)

        def on_term(signum, _frame):
            raise KeyboardInterrupt("signal %d" % signum)
        signal.signal(signal.SIGTERM, on_term)
        try:
            live.run()
        except KeyboardInterrupt as e:
            problems.add("live", "interrupted (%s)" % e)
        except Exception as e:  # noqa: BLE001 - reported, never a traceback alone
            import traceback
            problems.add("live", "unexpected error: %r\n%s" % (e, traceback.format_exc()))
        finally:
            if len(problems) > before and live.procs:
                print(live.log_tail(15), flush=True)
            live.cleanup()
        described = {(m.upper(), p) for p, m, _, _ in operations(spec)}
        seen = {(m, p) for m, p, _ in live.checked}
        live_text = "live: %d calls, %d of %d operations answered, %d (operation, status) pairs checked" % (
            live.calls, len(seen & described), len(described), len(live.checked))
        if args.verbose:
            for m, p, s in sorted(live.checked):
                print("check_openapi: live %s %s -> %s" % (m, p, s))
        missing = sorted(described - seen)
        if missing:
            print("check_openapi: operations not reached live: %s"
                  % ", ".join("%s %s" % x for x in missing), flush=True)

    elapsed = time.monotonic() - started
    if problems.items:
        print("check_openapi: %d problem(s):" % len(problems.items))
        for p in problems.items:
            print("  - " + p.replace("\n", "\n    "))
        print("FAIL (%s; %.1f s)" % (live_text, elapsed))
        return 1
    print("PASS: %s: OpenAPI %s, %d operations = %d routes + %d served by the front end, "
          "%d refs, %d schemas, %d examples valid; %s (%.1f s)"
          % (os.path.relpath(args.spec), spec.get("openapi"), n_ops, n_routes, len(EXTRA_ROUTES),
             refs, counted["schemas"], counted["examples"], live_text, elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
