"""The Admin API commands of the seed tutorials (/work/shared/seeds/000, 001, 002), sent as the
tutorials' curl commands send them (form bodies from --data, trailing slashes as written), with
the status and JSON shape they show. Only the address differs: the tutorials' localhost:8001 /
kong:8001 is our CP's admin_url. The proxy requests (port 8000) need a data plane and are not
covered here."""
import re

from admin_helpers import GENERATED_KEY_RE, NOT_FOUND, UUID_RE, assert_timestamp, expect


def curl(admin, method, path, *data):
    """`curl -X METHOD <admin>PATH --data d1 --data d2 ...`: curl joins the --data values with
    '&', sends them unencoded as application/x-www-form-urlencoded (also for -d '')."""
    if not data:
        return admin.request(method, path)
    return admin.request(method, path, data="&".join(data).encode(),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})


def assert_credential(body, consumer_id, key=None):
    assert UUID_RE.match(body["id"])
    assert body["consumer"] == {"id": consumer_id}
    assert_timestamp(body["created_at"])
    if key is None:
        assert GENERATED_KEY_RE.match(body["key"]), body["key"]
    else:
        assert body["key"] == key
    assert body["tags"] is None


def assert_consumer(body, username, custom_id=None):
    assert UUID_RE.match(body["id"])
    assert body["username"] == username and body["custom_id"] == custom_id
    assert_timestamp(body["created_at"])
    assert_timestamp(body["updated_at"])
    assert body["tags"] is None


# ------------------------------------------------------------------------------ seed 000

def test_seed_000_adding_consumers(admin):
    # "Before you start": a configured Service (routed by Host example.com) with key-auth.
    expect(curl(admin, "POST", "/services/", "name=example-service",
                "url=http://mockbin.org"), 201)
    expect(curl(admin, "POST", "/services/example-service/routes", "hosts[]=example.com"), 201)
    expect(curl(admin, "POST", "/services/example-service/plugins/", "name=key-auth"), 201)

    # 1. Create a Consumer through the RESTful API
    resp = curl(admin, "POST", "/consumers/", "username=Jason")
    jason = expect(resp, 201)
    assert resp.headers["Content-Type"].startswith("application/json")
    assert_consumer(jason, "Jason")

    # 2. Provision key credentials for your Consumer
    resp = curl(admin, "POST", "/consumers/Jason/key-auth/", "key=ENTER_KEY_HERE")
    assert_credential(expect(resp, 201), jason["id"], "ENTER_KEY_HERE")

    assert expect(admin.get("/key-auths/ENTER_KEY_HERE/consumer"), 200) == jason


# ------------------------------------------------------------------------------ seed 001

def test_seed_001_configure_key_authentication(admin):
    # From the earlier tutorial steps: a service and the `mocking` route on /mock.
    expect(curl(admin, "POST", "/services", "name=example_service",
                "url=http://mockbin.org"), 201)
    expect(curl(admin, "POST", "/services/example_service/routes", "paths=/mock",
                "name=mocking"), 201)

    # Set up the Key Authentication Plugin
    resp = curl(admin, "POST", "/routes/mocking/plugins", "name=key-auth")
    plugin = expect(resp, 201)
    route = expect(admin.get("/routes/mocking"), 200)
    assert plugin["name"] == "key-auth" and plugin["route"] == {"id": route["id"]}
    assert plugin["enabled"] is True and plugin["config"]["key_names"] == ["apikey"]

    # Set up Consumers and Credentials
    resp = curl(admin, "POST", "/consumers/", "username=consumer", "custom_id=consumer")
    consumer = expect(resp, 201)
    assert_consumer(consumer, "consumer", "consumer")

    resp = curl(admin, "POST", "/consumers/consumer/key-auth", "key=apikey")
    cred = expect(resp, 201)
    assert_credential(cred, consumer["id"], "apikey")
    assert set(cred) - {"ttl"} == {"consumer", "created_at", "id", "key", "tags"}

    # (Optional) Disable the plugin: find the plugin ID ...
    listed = expect(curl(admin, "GET", "/routes/mocking/plugins/"), 200)
    assert [p["id"] for p in listed["data"]] == [plugin["id"]]
    assert listed["next"] is None

    # ... and PATCH it with enabled=false (the tutorial's {<plugin-id>} is that id).
    resp = curl(admin, "PATCH", f"/routes/mocking/plugins/{listed['data'][0]['id']}",
                "enabled=false")
    disabled = expect(resp, 200)
    assert disabled["id"] == plugin["id"] and disabled["enabled"] is False
    assert disabled["config"] == plugin["config"]
    assert expect(admin.get(f"/plugins/{plugin['id']}"), 200)["enabled"] is False


# ------------------------------------------------------------------------------ seed 002

def test_seed_002_apis_endpoint_is_gone(admin):
    # `/apis/{api}/plugins` is Kong 0.x; Kong 3.10 has no such endpoint.
    resp = curl(admin, "POST", "/apis/my-api/plugins", "name=key-auth",
                "config.hide_credentials=true")
    assert expect(resp, 404) == NOT_FOUND
    assert expect(admin.get("/apis"), 404) == NOT_FOUND


def test_seed_002_key_authentication_plugin_page(admin):
    # Configuration: the same request against a Service (the 3.x replacement for an API) ...
    expect(curl(admin, "POST", "/services/", "name=seed002-api", "url=http://upstream.test"),
           201)
    resp = curl(admin, "POST", "/services/seed002-api/plugins", "name=key-auth",
                "config.hide_credentials=true")
    plugin = expect(resp, 201)
    assert plugin["config"]["hide_credentials"] is True
    assert plugin["config"]["key_names"] == ["apikey"]
    assert plugin["config"]["anonymous"] is None

    # ... and for every API, through /plugins/.
    resp = curl(admin, "POST", "/plugins/", "name=key-auth", "config.hide_credentials=true")
    global_plugin = expect(resp, 201)
    assert global_plugin["service"] is None and global_plugin["route"] is None
    assert global_plugin["config"]["hide_credentials"] is True

    # Create a Consumer
    resp = curl(admin, "POST", "/consumers/", "username=seed002-user",
                "custom_id=seed002-custom")
    consumer = expect(resp, 201)
    assert_consumer(consumer, "seed002-user", "seed002-custom")

    # Create an API Key: `-d ''`, addressing the consumer by id or by username.
    for ref in (consumer["id"], consumer["username"]):
        resp = curl(admin, "POST", f"/consumers/{ref}/key-auth", "")
        assert_credential(expect(resp, 201), consumer["id"])

    # "You can optionally set your own unique key".
    resp = curl(admin, "POST", "/consumers/seed002-user/key-auth", "key=my-own-key-002")
    assert_credential(expect(resp, 201), consumer["id"], "my-own-key-002")

    keys = expect(admin.get("/consumers/seed002-user/key-auth"), 200)["data"]
    assert len(keys) == 3
    assert all(re.match(r"^[A-Za-z0-9-]+$", k["key"]) for k in keys)
