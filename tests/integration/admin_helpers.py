"""Small helpers shared by the Admin API tests (test_admin_*.py, test_seed_tutorials.py).

They only shape requests and check responses; every process comes from the conftest fixtures.
"""
import contextlib
import re
import time
import uuid
from urllib.parse import urlencode

from harness.procs import wait_for

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
GENERATED_KEY_RE = re.compile(r"^[A-Za-z0-9]{32}$")
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOT_FOUND = {"message": "Not found"}


def uniq(prefix="t"):
    """A name no other test uses (tests in one module share one CP)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def expect(resp, status):
    """Asserts the status (showing the request and body when it differs); returns the JSON body
    (None for 204, which must have no body)."""
    req = resp.request
    where = f"{req.method} {req.path_url}"
    assert resp.status_code == status, \
        f"{where}: expected {status}, got {resp.status_code}: {resp.text[:3000]}"
    if status == 204:
        assert resp.content == b"", f"{where}: 204 with a body: {resp.text[:500]}"
        return None
    assert resp.headers.get("Content-Type", "").startswith("application/json"), \
        f"{where}: Content-Type {resp.headers.get('Content-Type')!r}"
    return resp.json()


def form(*pairs):
    """kwargs for admin.post/put/patch sending `pairs` as curl --data would:
    application/x-www-form-urlencoded, keys repeated and in the given order."""
    return {"data": urlencode(list(pairs)), "headers": dict(FORM)}


def multipart(*pairs):
    """kwargs sending `pairs` as multipart/form-data fields (no file names), like curl -F."""
    return {"files": [(k, (None, v)) for k, v in pairs]}


def assert_timestamp(value):
    """created_at/updated_at: integer Unix seconds, close to now."""
    assert isinstance(value, int) and not isinstance(value, bool), f"{value!r} is not an integer"
    assert abs(value - time.time()) < 600, f"{value} is not a current Unix time in seconds"


def list_pages(admin, path, params=None, max_pages=200):
    """Walks a paginated list by following `offset` (as go-kong does); returns the pages."""
    params = dict(params or {})
    pages = []
    while True:
        body = expect(admin.get(path, params=params), 200)
        pages.append(body)
        if "offset" not in body:
            return pages
        assert len(pages) < max_pages, f"{path}: no last page after {max_pages} pages"
        params["offset"] = body["offset"]


def list_all(admin, path, params=None):
    """Every item of a paginated list."""
    return [item for page in list_pages(admin, path, params) for item in page["data"]]


def config_version(admin):
    """The control plane's configuration version as GET /status reports it."""
    return expect(admin.get("/status"), 200)["configuration"]["config_version"]


def control_plane_id(admin):
    return expect(admin.get("/status"), 200)["configuration"]["control_plane_id"]


@contextlib.contextmanager
def db_cursor(pg_server, cp):
    """A cursor on the CP's own database (autocommit), as the app role."""
    conn = pg_server.connect(cp.database)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def wait_until(predicate, timeout=15.0, interval=0.1, what="condition"):
    """Polls predicate() until truthy (returned); fails the test after `timeout` seconds."""
    try:
        return wait_for(predicate, timeout, interval=interval, what=what)
    except TimeoutError as e:
        raise AssertionError(str(e)) from None


def make_service(admin, **fields):
    body = {"name": uniq("svc"), "host": "upstream.test"}
    body.update(fields)
    return expect(admin.post("/services", json=body), 201)


def make_route(admin, service=None, **fields):
    body = {"name": uniq("route"), "paths": [f"/{uuid.uuid4().hex[:8]}"]}
    if service is not None:
        body["service"] = {"id": service["id"]}
    body.update(fields)
    return expect(admin.post("/routes", json=body), 201)


def make_consumer(admin, **fields):
    body = {"username": uniq("user")}
    body.update(fields)
    return expect(admin.post("/consumers", json=body), 201)


def make_key(admin, consumer, **fields):
    return expect(admin.post(f"/consumers/{consumer['id']}/key-auth", json=fields), 201)
