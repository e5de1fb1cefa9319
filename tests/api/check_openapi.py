"""The API's OpenAPI description against the code and a live server.

Run by tests/all/openapi.rs against `troupe up` with the repository's pipeline and the
model, authentication on (an admin and a read key of one tenant). Fails, naming each
difference, when:

1. the description is not valid OpenAPI 3.1, or `/v1/openapi.json` serves another text;
2. a route (method and path) is in the code but not in the description, or the other
   way round (routes: spin.toml's `/v1` triggers and the match arms of the components
   serving them, and the host's own `/v1` routes);
3. a status code a component's source answers with is in none of its operations'
   responses, or a documented status is neither in its component's source nor one the
   host answers for any route (auth, limits);
4. a request answers a status its operation does not document, or a body that does not
   validate against the documented schema (every object schema of ours is closed:
   `additionalProperties: false`, so an undocumented field fails);
5. a documented (operation, status) was not produced by the scenario below, unless it
   is in EXCUSED with the reason; or a documented property of an object schema never
   appeared in any answer.
"""

import argparse
import json
import re
import sys
import time
import uuid
from pathlib import Path

import requests
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# Answers the host gives for any `/v1` route, before or around the component: an
# unreadable or slow body, the credential, its scope and rate, a body over the route's
# limit, a function that failed or timed out, overload.
HOST_STATUSES = {"400", "401", "403", "408", "413", "429", "500", "503", "504"}

# 405 answers a method an operation does not have: no operation documents it (the
# paths' descriptions do), and Schemathesis' `unsupported_method` check expects it.
UNDOCUMENTABLE = {"405"}

# The host's shared answers (components/responses) this scenario does not provoke on
# one healthy machine, and the tests that do.
EXCUSED_SHARED = {
    "BadRequest": "a body the host cannot read whole (tests/all/hostile.rs)",
    "RequestTimeout": "a body slower than the minimum rate (tests/all/hostile.rs)",
    "InternalError": "a function that traps (tests/all/sandbox.rs)",
    "GatewayTimeout": "a function past its timeout (tests/all/sandbox.rs)",
    "Unavailable": "overload (tests/all/hostile.rs)",
    "RateLimited": "rate limits, off unless --rate-limit is set (tests/all/auth.rs)",
    "TooLarge": "a body over a JSON route's limit (tests/all/hostile.rs)",
}

# Answers of one operation the scenario does not produce, and why.
EXCUSED_OPERATION = {
    ("createEmbeddings", "404"): "only a server without the model (--no-embeddings) answers it",
    ("uploadDocument", "400"): "a body the host cannot read whole (tests/all/hostile.rs)",
}

# Documented fields of answers the scenario does not produce, and why.
EXCUSED_PROPERTY = {
    ("ErrorDetail", "request_id"): "errors whose detail stays in the log: a trap, a timeout "
    "(tests/all/sandbox.rs)",
    ("CloudEvent", "data_base64"): "payloads that are not JSON; every document event's is",
    ("CloudEvent", "traceparent"): "set only while traces are exported (tests/all/traces.rs)",
}

# Answers of any operation the scenario does not produce, and why.
EXCUSED = {
    "503": "store outages and overload (tests/all/kills.rs, tests/all/hostile.rs)",
    "429": "rate limits, off unless --rate-limit is set (tests/all/auth.rs)",
    "501": "only AWS Lambda answers GET /v1/events with 501",
    "500": "a failing model or function (tests/all/sandbox.rs)",
}

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL: {message}")


def spec_operations(spec):
    """{(METHOD, path): operation} of the description."""
    ops = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete", "head", "options"):
                ops[(method.upper(), path)] = op
    return ops


def normalize(path):
    return re.sub(r"\{[^}]+\}", "{}", path)


def code_routes(repo):
    """{(METHOD, path): component} from spin.toml, the components' match arms and the
    host's own routes."""
    manifest = (repo / "spin.toml").read_text()
    triggers = re.findall(r'route = "(/v1[^"]*)"\s*\ncomponent = "(\w+)"', manifest)
    routes = {}
    for route, component in triggers:
        source = "\n".join(
            p.read_text() for p in sorted((repo / "functions" / component / "src").glob("*.rs"))
        )
        arms = re.findall(r'\(Method::(\w+), \[("v1"[^\]]*)\]\)', source)
        if arms:
            for method, segments in arms:
                parts = [s.strip() for s in segments.split(",")]
                path = "/" + "/".join(p.strip('"') if p.startswith('"') else "{}" for p in parts)
                routes[(method.upper(), path)] = component
        else:
            # A component serving one exact route checks the method itself.
            methods = re.findall(r"req\.method\(\) != Method::(\w+)", source)
            for method in methods:
                routes[(method.upper(), route)] = component
    host = "\n".join(
        p.read_text()
        for p in [repo / "crates/host/src/server.rs", *sorted((repo / "crates/host/src/server").glob("*.rs"))]
    )
    cli = (repo / "crates/cli/src/main.rs").read_text()
    feed = (repo / "crates/host/src/feed.rs").read_text()
    if "(&http::Method::GET, crate::feed::PATH)" in host:
        path = re.search(r'pub const PATH: &str = "([^"]+)"', feed).group(1)
        routes[("GET", path)] = "host"
    openapi = re.search(r'pub const OPENAPI_PATH: &str = "([^"]+)"', host).group(1)
    routes[("GET", openapi)] = "host"
    for method, path in re.findall(r'Method::(\w+),\s*"(/v1/[^"]+)"', cli):
        routes[(method.upper(), path)] = "host"
    return routes


def code_statuses(repo, component):
    """The status codes a component's source answers with."""
    source = "\n".join(p.read_text() for p in (repo / "functions" / component / "src").glob("*.rs"))
    found = set(re.findall(r"(?:error|json|send|empty)\(\s*out,\s*(\d{3})", source))
    found |= set(re.findall(r'\((\d{3}),\s*"[a-z_]+"', source))
    return found


def answer_schemas(spec):
    """The names of the component schemas an answer can hold (not requests')."""
    names, todo = set(), []

    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref" and v.startswith("#/components/schemas/"):
                    todo.append(v.rsplit("/", 1)[-1])
                else:
                    refs(v)
        elif isinstance(node, list):
            for v in node:
                refs(v)

    for item in spec["paths"].values():
        for op in item.values():
            if isinstance(op, dict):
                refs(op.get("responses", {}))
    refs(spec.get("components", {}).get("responses", {}))
    while todo:
        name = todo.pop()
        if name not in names:
            names.add(name)
            refs(spec["components"]["schemas"][name])
    return names


def absolute(schema):
    """`schema` with its references into the description made absolute."""
    if isinstance(schema, dict):
        return {
            k: ("urn:troupe" + v if k == "$ref" and v.startswith("#") else absolute(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [absolute(v) for v in schema]
    return schema


class Checker:
    def __init__(self, spec, base):
        self.spec = spec
        self.base = base
        self.registry = Registry().with_resource(
            "urn:troupe", Resource.from_contents(spec, default_specification=DRAFT202012)
        )
        self.ops = {op["operationId"]: (m, p, op) for (m, p), op in spec_operations(spec).items()}
        self.seen = set()
        self.properties_seen = set()

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            target = self.spec
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def call(self, op_id, *, path_params=None, headers=None, **kwargs):
        method, path, op = self.ops[op_id]
        url = self.base + path.format(**(path_params or {}))
        r = requests.request(method, url, headers=headers or {}, timeout=30, **kwargs)
        status = str(r.status_code)
        self.seen.add((op_id, status))
        responses = op.get("responses", {})
        response = responses.get(status) or responses.get(status[0] + "XX") or responses.get("default")
        if response is None:
            fail(f"{op_id}: answered {status}, which it does not document: {r.text[:300]}")
            return r
        response = self.resolve(response)
        content = response.get("content", {})
        ctype = r.headers.get("content-type", "").split(";")[0].strip()
        if not content:
            if r.content:
                fail(f"{op_id} {status}: documents no body, got {r.text[:200]!r}")
            return r
        if ctype not in content:
            fail(f"{op_id} {status}: content type {ctype!r} not in {list(content)}")
            return r
        schema = content[ctype].get("schema")
        if schema is not None and ctype.endswith("json"):
            self.check_body(op_id, status, schema, r.json())
        return r

    def check_body(self, op_id, status, schema, body):
        validator = Draft202012Validator(absolute(schema), registry=self.registry)
        for error in validator.iter_errors(body):
            fail(f"{op_id} {status}: {error.message} at {list(error.absolute_path)}")
        self.walk(schema, body)

    def walk(self, schema, value, name=None):
        """Records which documented properties of our object schemas appeared."""
        if isinstance(schema, dict) and "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return
        for key in ("oneOf", "anyOf", "allOf"):
            for sub in schema.get(key, []):
                self.walk(sub, value, name)
        if isinstance(value, dict):
            for prop, sub in schema.get("properties", {}).items():
                if prop in value:
                    if name:
                        self.properties_seen.add((name, prop))
                    self.walk(sub, value[prop])
        if isinstance(value, list) and "items" in schema:
            for item in value:
                self.walk(schema["items"], item)


def scenario(c, admin, read):
    """Every operation, and each answer it documents that one machine can produce."""
    auth = {"authorization": f"Bearer {admin}"}
    reader = {"authorization": f"Bearer {read}"}
    c.call("getOpenApi")
    # Without a credential, every operation but the description answers 401; with too
    # little scope, those that need more than `read` answer 403.
    for op_id, (method, path, op) in sorted(c.ops.items()):
        if op_id == "getOpenApi":
            continue
        params = {"id": "any"} if "{id}" in path else {}
        c.call(op_id, path_params=params)
        if op.get("x-required-scope", "read") != "read":
            c.call(op_id, path_params=params, headers=reader)
    # Uploads: accepted, unsupported, too large for a JSON-sized route, forbidden.
    text = b"# Lighthouses\n\nThe keeper trims the lamp wick every evening at dusk."
    r = c.call("uploadDocument", headers={**auth, "content-type": "text/markdown"},
               params={"name": "lighthouse.md"}, data=text)
    doc = r.json()["id"]
    other = c.call("uploadDocument", headers={**auth, "content-type": "text/plain"},
                   params={"name": "tides.txt"},
                   data=b"The moon pulls the sea into two bulges twice a day.").json()["id"]
    broken = c.call("uploadDocument", headers={**auth, "content-type": "application/pdf"},
                    params={"name": "broken.pdf"}, data=b"%PDF-1.7\nnot a pdf at all").json()["id"]
    c.call("uploadDocument", headers={**auth, "content-type": "application/x-msdownload"},
           params={"name": "setup.exe"}, data=b"MZ\x90\x00")
    c.call("uploadDocument", headers={**reader, "content-type": "text/plain"}, data=b"hi")
    c.call("uploadDocument", headers={"content-type": "text/plain"}, data=b"hi")
    c.call("uploadDocument", headers={**auth, "content-type": "text/plain"},
           data=b"x" * (60 * 1024 * 1024))
    # Wait for both to settle, reading the record.
    deadline = time.time() + 120
    while time.time() < deadline:
        states = [c.call("getDocument", path_params={"id": d}, headers=reader).json().get("status")
                  for d in (doc, other, broken)]
        if all(s in ("indexed", "failed") for s in states):
            break
        time.sleep(0.5)
    c.call("getDocument", path_params={"id": "nope"}, headers=reader)
    c.call("listDocuments", headers=reader, params={"limit": 1})
    page = c.call("listDocuments", headers=reader, params={"limit": 1}).json()
    if page.get("next_cursor"):
        c.call("listDocuments", headers=reader, params={"limit": 1, "cursor": page["next_cursor"]})
    c.call("listDocuments", headers=reader, params={"status": "indexed"})
    c.call("listDocuments", headers=reader, params={"limit": 0})
    c.call("getDocumentEvents", path_params={"id": doc}, headers=reader)
    c.call("getDocumentEvents", path_params={"id": "nope"}, headers=reader)
    # Search and embeddings.
    c.call("search", headers=reader, json={"query": "lamp wick at dusk", "k": 3})
    c.call("search", headers=reader, json={"query": ""})
    c.call("search", headers=reader, data=b"{not json", )
    c.call("createEmbeddings", headers=reader, json={"input": ["a lamp", "the sea"]})
    c.call("createEmbeddings", headers=reader, json={"input": 7})
    big = json.dumps({"input": "word " * 3_500_000})
    c.call("createEmbeddings", headers={**reader, "content-type": "application/json"}, data=big)
    c.call("search", headers={**reader, "content-type": "application/json"},
           data=json.dumps({"query": "word " * 600_000}))
    # Webhooks.
    hook = c.call("createWebhook", headers=auth,
                  json={"url": "http://127.0.0.1:9/troupe", "events": ["document.indexed"]})
    c.call("createWebhook", headers=auth, json={"events": []})
    c.call("createWebhook", headers=auth, json={"url": "ftp://example.com/x"})
    c.call("createWebhook", headers=auth, json={"url": "https://example.com/x", "events": ["nope"]})
    c.call("createWebhook", headers=reader, json={"url": "https://example.com/x"})
    for _ in range(25):
        if c.call("createWebhook", headers=auth,
                  json={"url": "http://127.0.0.1:9/more"}).status_code == 409:
            break
    c.call("createWebhook", headers={**auth, "content-type": "application/json"},
           data=json.dumps({"url": "http://127.0.0.1:9/" + "x" * 20_000}))
    c.call("listWebhooks", headers=auth)
    c.call("deleteWebhook", path_params={"id": hook.json()["id"]}, headers=auth)
    c.call("deleteWebhook", path_params={"id": "nope"}, headers=auth)
    # The event stream: opened, then refused a bad Last-Event-ID.
    with requests.get(c.base + "/v1/events", headers=reader, stream=True, timeout=10) as s:
        c.seen.add(("streamEvents", str(s.status_code)))
        first = next(s.iter_lines(decode_unicode=True))
        if not first.startswith("id: "):
            fail(f"streamEvents: first line {first!r}")
    c.call("streamEvents", headers={**reader, "last-event-id": "x"})
    # Deletion last.
    c.call("deleteDocument", path_params={"id": doc}, headers=auth)
    c.call("deleteDocument", path_params={"id": "nope"}, headers=auth)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", type=Path, required=True)
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--admin-key", required=True)
    ap.add_argument("--read-key", required=True)
    args = ap.parse_args()
    text = args.spec.read_text()
    spec = json.loads(text)

    # 1. Valid, and what the server serves.
    validate(spec)
    served = requests.get(args.base + "/v1/openapi.json", timeout=10)
    if served.status_code != 200 or served.text != text:
        fail("/v1/openapi.json does not serve docs/openapi.json as it is")

    # 2. Routes.
    documented = {(m, normalize(p)) for (m, p) in spec_operations(spec)}
    routes = code_routes(args.repo)
    coded = {(m, normalize(p)) for (m, p) in routes}
    for missing in sorted(coded - documented):
        fail(f"route {missing[0]} {missing[1]} is in the code but not in the description")
    for extra in sorted(documented - coded):
        fail(f"route {extra[0]} {extra[1]} is in the description but not in the code")

    # 3. Status codes per component.
    by_component = {}
    for (m, p), op in spec_operations(spec).items():
        component = routes.get((m, p)) or routes.get(
            next((k for k in routes if (k[0], normalize(k[1])) == (m, normalize(p))), None)
        )
        if component:
            by_component.setdefault(component, set()).update(op.get("responses", {}))
    for component, statuses in sorted(by_component.items()):
        if component == "host":
            continue
        in_code = code_statuses(args.repo, component) - UNDOCUMENTABLE
        for status in sorted(in_code - statuses):
            fail(f"`{component}` answers {status}, which none of its operations documents")
        for status in sorted(statuses - in_code - HOST_STATUSES - {"default"}):
            fail(f"`{component}`'s operations document {status}, which neither it nor the host answers")

    # 4. and 5. The live answers.
    checker = Checker(spec, args.base)
    scenario(checker, args.admin_key, args.read_key)
    for op_id, (_, _, op) in sorted(checker.ops.items()):
        for status, response in op.get("responses", {}).items():
            shared = response.get("$ref", "").rsplit("/", 1)[-1]
            if (
                (op_id, status) in checker.seen
                or status in EXCUSED
                or shared in EXCUSED_SHARED
                or (op_id, status) in EXCUSED_OPERATION
            ):
                continue
            fail(f"{op_id} documents {status}, but the scenario never produced it")
    schemas = spec.get("components", {}).get("schemas", {})
    for name in sorted(answer_schemas(spec) - {"OpenApiDocument"}):
        schema = schemas[name]
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            fail(f"schema {name} is open: set additionalProperties to false")
        for prop in schema.get("properties", {}):
            if (name, prop) not in checker.properties_seen | set(EXCUSED_PROPERTY):
                fail(f"{name}.{prop} is documented but never appeared in an answer")
    print(f"{len(checker.seen)} (operation, status) pairs seen; {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
