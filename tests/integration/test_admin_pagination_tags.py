"""Admin API pagination and tags (kong-compat.md §1.4): `size`/`offset`/`next` on top-level and
nested lists, size and offset errors, `?tags=` AND/OR filters, /tags and /tags/{tag}."""
from urllib.parse import parse_qs, urlsplit

import pytest

from admin_helpers import (expect, list_all, list_pages, make_consumer, make_key, make_route,
                           make_service, uniq)

SIZE_RANGE = {"code": 9, "name": "invalid size",
              "message": "size must be an integer between 1 and 1000"}


def ids(items):
    return [item["id"] for item in items]


def tagged_consumers(admin, tag, n):
    return [make_consumer(admin, tags=[tag]) for _ in range(n)]


def assert_last_page(body):
    assert "offset" not in body, f"last page has an offset: {body}"
    assert body["next"] is None


def test_pages_by_size_following_next(admin):
    tag = uniq("page")
    created = tagged_consumers(admin, tag, 7)
    first = expect(admin.get("/consumers", params={"tags": tag, "size": 3}), 200)
    assert len(first["data"]) == 3 and isinstance(first["offset"], str) and first["offset"]
    nxt = urlsplit(first["next"])
    assert nxt.path == "/consumers"
    assert parse_qs(nxt.query) == {"offset": [first["offset"]], "size": ["3"], "tags": [tag]}

    second = expect(admin.get(first["next"]), 200)
    assert len(second["data"]) == 3 and second["offset"] != first["offset"]
    third = expect(admin.get(second["next"]), 200)
    assert len(third["data"]) == 1
    assert_last_page(third)

    seen = ids(first["data"] + second["data"] + third["data"])
    assert len(set(seen)) == 7 and set(seen) == set(ids(created))


def test_pages_by_offset_as_go_kong_does(admin):
    tag = uniq("page")
    created = tagged_consumers(admin, tag, 5)
    pages = list_pages(admin, "/consumers", {"tags": tag, "size": 2})
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    for page in pages[:-1]:
        assert page["next"] is not None and "offset" in page
    assert_last_page(pages[-1])
    seen = [c["id"] for p in pages for c in p["data"]]
    assert sorted(seen) == sorted(ids(created))


def test_exact_multiple_of_size_ends_cleanly(admin):
    tag = uniq("page")
    created = tagged_consumers(admin, tag, 4)
    pages = list_pages(admin, "/consumers", {"tags": tag, "size": 2})
    # Like Kong on PostgreSQL (it reads size + 1 rows), a full last page carries no offset.
    assert [len(p["data"]) for p in pages] == [2, 2]
    assert sorted(c["id"] for p in pages for c in p["data"]) == sorted(ids(created))
    assert_last_page(pages[-1])


def test_unfiltered_list_walks_everything_once(admin):
    created = {make_service(admin)["id"] for _ in range(3)}
    pages = list_pages(admin, "/services", {"size": 1})
    seen = [s["id"] for p in pages for s in p["data"]]
    assert len(seen) == len(set(seen))
    assert created <= set(seen)
    assert all(len(p["data"]) == 1 for p in pages)
    assert_last_page(pages[-1])
    everything = expect(admin.get("/services", params={"size": 1000}), 200)
    assert sorted(s["id"] for s in everything["data"]) == sorted(seen)
    assert_last_page(everything)


def test_default_page_size_is_100_and_1000_is_allowed(admin):
    consumer = make_consumer(admin)
    creds = [make_key(admin, consumer) for _ in range(101)]
    path = f"/consumers/{consumer['id']}/key-auth"
    first = expect(admin.get(path), 200)
    assert len(first["data"]) == 100 and first["offset"]
    rest = expect(admin.get(path, params={"offset": first["offset"]}), 200)
    assert len(rest["data"]) == 1
    assert_last_page(rest)
    everything = expect(admin.get(path, params={"size": 1000}), 200)
    assert sorted(ids(everything["data"])) == sorted(ids(creds))
    assert_last_page(everything)


@pytest.mark.parametrize("path", ["/consumers", "/services", "/routes", "/plugins",
                                  "/key-auths", "/tags"])
def test_invalid_size(admin, path):
    assert expect(admin.get(path, params={"size": "abc"}), 400) == {
        "code": 9, "name": "invalid size", "message": "size must be a number"}
    for size in ("0", "1001", "-1"):
        assert expect(admin.get(path, params={"size": size}), 400) == SIZE_RANGE


def test_invalid_size_on_nested_list(admin):
    consumer = make_consumer(admin)
    assert expect(admin.get(f"/consumers/{consumer['id']}/key-auth", params={"size": "x"}),
                  400) == {"code": 9, "name": "invalid size", "message": "size must be a number"}
    assert expect(admin.get(f"/consumers/{consumer['id']}/key-auth", params={"size": "0"}),
                  400) == SIZE_RANGE


@pytest.mark.parametrize("path", ["/consumers", "/key-auths", "/services"])
def test_invalid_offset(admin, path):
    body = expect(admin.get(path, params={"offset": "bogus!"}), 400)
    assert body["code"] == 7 and body["name"] == "invalid offset"
    assert body["message"].startswith("'bogus!' is not a valid offset: "), body["message"]
    assert set(body) == {"code", "name", "message"}


def test_nested_lists_paginate(admin):
    consumer = make_consumer(admin)
    creds = [make_key(admin, consumer) for _ in range(5)]
    base = f"/consumers/{consumer['username']}/key-auth"
    first = expect(admin.get(base, params={"size": 2}), 200)
    assert len(first["data"]) == 2
    nxt = urlsplit(first["next"])
    assert nxt.path == base
    assert parse_qs(nxt.query)["offset"] == [first["offset"]]
    pages = list_pages(admin, base, {"size": 2})
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert_last_page(pages[-1])
    assert sorted(c["id"] for p in pages for c in p["data"]) == sorted(ids(creds))

    svc = make_service(admin)
    routes = [make_route(admin, service=svc) for _ in range(3)]
    pages = list_pages(admin, f"/services/{svc['name']}/routes", {"size": 1})
    assert [len(p["data"]) for p in pages] == [1, 1, 1]
    assert pages[0]["next"].startswith(f"/services/{svc['name']}/routes?offset=")
    assert sorted(r["id"] for p in pages for r in p["data"]) == sorted(ids(routes))


def test_trailing_slash_lists(admin):
    consumer = make_consumer(admin)
    make_key(admin, consumer)
    with_slash = expect(admin.get("/key-auths/", params={"size": 1000}), 200)
    without = expect(admin.get("/key-auths", params={"size": 1000}), 200)
    assert with_slash == without and with_slash["data"]


# ------------------------------------------------------------------------------ tags

def test_tags_and_or_filters(admin):
    x, y, z = uniq("x"), uniq("y"), uniq("z")
    a = make_consumer(admin, tags=[x, y])
    b = make_consumer(admin, tags=[x])
    c = make_consumer(admin, tags=[y])
    d = make_consumer(admin, tags=[z])

    def listed(tags):
        return set(ids(list_all(admin, "/consumers", {"tags": tags})))

    assert listed(f"{x},{y}") == {a["id"]}
    assert listed(f"{x}/{y}") == {a["id"], b["id"], c["id"]}
    assert listed(x) == {a["id"], b["id"]}
    assert listed(f"{x}/{z}") == {a["id"], b["id"], d["id"]}
    assert listed(f"{x},{z}") == set()
    # The `next` link of a filtered page keeps the filter.
    page = expect(admin.get("/consumers", params={"tags": f"{x}/{y}", "size": 1}), 200)
    assert parse_qs(urlsplit(page["next"]).query)["tags"] == [f"{x}/{y}"]


@pytest.mark.parametrize("path", ["/consumers", "/services", "/routes", "/plugins",
                                  "/key-auths"])
def test_empty_tags_filter_is_invalid_option(admin, path):
    assert expect(admin.get(f"{path}?tags="), 400) == {
        "code": 11, "name": "invalid options",
        "message": "invalid option (tags: cannot be null)",
        "options": {"tags": "cannot be null"}}


def test_tags_filter_on_every_entity(admin):
    tag = uniq("every")
    svc = make_service(admin, tags=[tag])
    route = make_route(admin, service=svc, tags=[tag])
    consumer = make_consumer(admin, tags=[tag])
    plugin = expect(admin.post("/plugins", json={"name": "key-auth", "tags": [tag],
                                                 "route": {"id": route["id"]}}), 201)
    cred = make_key(admin, consumer, tags=[tag, "other"])
    make_service(admin)
    make_key(admin, consumer)
    for path, entity in (("/services", svc), ("/routes", route), ("/consumers", consumer),
                         ("/plugins", plugin), ("/key-auths", cred)):
        assert ids(list_all(admin, path, {"tags": tag})) == [entity["id"]], path


def test_tags_endpoints(admin):
    tag, other = uniq("tg"), uniq("tg")
    svc = make_service(admin, tags=[tag])
    route = make_route(admin, service=svc, tags=[tag, other])
    consumer = make_consumer(admin, tags=[tag])
    plugin = expect(admin.post("/plugins", json={"name": "key-auth", "tags": [tag],
                                                 "route": {"id": route["id"]}}), 201)
    cred = make_key(admin, consumer, tags=[tag])
    expected = {("services", svc["id"]), ("routes", route["id"]),
                ("consumers", consumer["id"]), ("plugins", plugin["id"]),
                ("keyauth_credentials", cred["id"])}

    rows = list_all(admin, f"/tags/{tag}")
    for row in rows:
        assert set(row) == {"entity_name", "entity_id", "tag"} and row["tag"] == tag
    assert {(r["entity_name"], r["entity_id"]) for r in rows} == expected
    assert len(rows) == 5

    assert list_all(admin, f"/tags/{other}") == [
        {"entity_name": "routes", "entity_id": route["id"], "tag": other}]

    pages = list_pages(admin, f"/tags/{tag}", {"size": 2})
    assert [len(p["data"]) for p in pages] == [2, 2, 1]
    assert_last_page(pages[-1])
    assert {(r["entity_name"], r["entity_id"]) for p in pages for r in p["data"]} == expected

    everything = {(r["entity_name"], r["entity_id"], r["tag"]) for r in list_all(admin, "/tags")}
    assert {(n, i, tag) for n, i in expected} | {("routes", route["id"], other)} <= everything

    first = expect(admin.get("/tags", params={"size": 1}), 200)
    assert len(first["data"]) == 1
    second = expect(admin.get(first["next"]), 200)
    assert second["data"] and second["data"][0] != first["data"][0]

    # Retagging and deleting update the tag listings.
    expect(admin.patch(f"/consumers/{consumer['id']}", json={"tags": [other]}), 200)
    expect(admin.delete(f"/key-auths/{cred['id']}"), 204)
    rows = {(r["entity_name"], r["entity_id"]) for r in list_all(admin, f"/tags/{tag}")}
    assert rows == expected - {("consumers", consumer["id"]),
                               ("keyauth_credentials", cred["id"])}
    rows = {(r["entity_name"], r["entity_id"]) for r in list_all(admin, f"/tags/{other}")}
    assert rows == {("routes", route["id"]), ("consumers", consumer["id"])}


def test_unknown_tag_lists_nothing(admin):
    assert expect(admin.get(f"/tags/{uniq('none')}"), 200) == {"data": [], "next": None}
