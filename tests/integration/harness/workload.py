"""A random but reproducible Admin API workload over several control plane nodes, with a model
of what the configuration must be after it, for the cluster consistency test.

AdminPool      the CP nodes writes go to. Each write picks a node that is up; drain(i) takes a
               node out (new writes go elsewhere) and waits for its writes in flight, so a test
               can kill it without leaving a write whose outcome is unknown; restore(i) puts it
               back (writers then open new connections to it).
Writer         one thread's writes. Every writer owns its entities (names start with w<index>),
               so its model depends only on its own seeded choices and the answers it got,
               whatever the interleaving with other writers: services, routes nested under
               them, consumers (POST and PUT upserts), key-auth credentials, key-auth plugins
               on routes and services, rate-limiting plugins on routes, services and consumers;
               updates of each, deletes (plain and nested paths), cascading deletes (a consumer
               takes its credentials and plugins, a route or service its plugins), a service
               emptied route by route before it is deleted, and a few writes the API must
               refuse (404 parent, 409 duplicate, 400 service still referenced) which change
               nothing. Every answer is checked against the expected status; mismatches are
               collected in .failures rather than raised, so one run reports them all.
Model          the union of the writers' models: expected() tells what a proxied request to a
               route must get (status, consumer, upstream path, rate limit) per Kong's rules
               (route-level plugin before service-level, consumer-level rate limit first,
               disabled plugins ignored).
"""
import random
import threading
import time

import requests

KEY_NAMES = (["apikey"], ["x-api-key"])


class AdminPool:
    def __init__(self, cps):
        self.cps = list(cps)
        self.up = [True] * len(self.cps)
        self.inflight = [0] * len(self.cps)
        self.generation = [0] * len(self.cps)
        self.cond = threading.Condition()

    def acquire(self, rng):
        with self.cond:
            while True:
                ups = [i for i, u in enumerate(self.up) if u]
                if ups:
                    break
                if not self.cond.wait(60):
                    raise TimeoutError("no control plane node has been up for 60 s")
            i = rng.choice(ups)
            self.inflight[i] += 1
            return i, self.generation[i]

    def release(self, i):
        with self.cond:
            self.inflight[i] -= 1
            self.cond.notify_all()

    def drain(self, i, timeout=60):
        with self.cond:
            self.up[i] = False
            if not self.cond.wait_for(lambda: self.inflight[i] == 0, timeout):
                raise TimeoutError(f"writes to CP node {i} did not finish in {timeout} s")

    def restore(self, i):
        with self.cond:
            self.generation[i] += 1
            self.up[i] = True
            self.cond.notify_all()


class Writer:
    """Writes until `stop` is set or `budget()` says no more; run() is the thread's body."""

    CAPS = {"services": 10, "routes": 30, "consumers": 40, "creds": 60, "plugins": 40}

    def __init__(self, index, seed, pool, upstream_url, budget):
        self.t = index
        self.rng = random.Random(f"{seed}/writer/{index}")
        self.node_rng = random.Random(f"{seed}/nodes/{index}")  # node choice: not in the model
        self.pool = pool
        self.up = upstream_url
        self.budget = budget  # callable: True while another write may start
        self.sessions = {}
        self.n = 0  # name counter
        self.services, self.routes, self.consumers = {}, {}, {}
        self.creds, self.plugins = {}, {}
        self.deleted_keys = []
        self.ok = 0  # writes answered 2xx
        self.refused = 0  # writes refused as expected (invalid on purpose)
        self.retried = 0
        self.failures = []
        self.counts = {}

    # -- HTTP -------------------------------------------------------------------------------

    def _session(self, i, gen):
        s = self.sessions.get(i)
        if s is None or s[0] != gen:
            if s:
                s[1].close()
            sess = requests.Session()
            sess.trust_env = False
            self.sessions[i] = s = (gen, sess)
        return s[1]

    def _send(self, method, path, body):
        i, gen = self.pool.acquire(self.node_rng)
        try:
            url = self.pool.cps[i].admin_url + path
            return self._session(i, gen).request(method, url, json=body, timeout=30)
        finally:
            self.pool.release(i)

    def call(self, method, path, body=None, expect=200, again=()):
        """One write; returns the response when its status is `expect`, else None (recorded).
        A connection error (a node restarted under an idle keep-alive connection) is retried
        once on a fresh connection; `again` lists statuses that mean the first try committed
        (409 for a create, 404 for a delete)."""
        try:
            r = self._send(method, path, body)
        except requests.ConnectionError:
            self.retried += 1
            self.sessions.clear()
            time.sleep(0.2)
            r = self._send(method, path, body)
            if r.status_code in again:
                return r
        if r.status_code != expect:
            self.failures.append(f"{method} {path} {body}: expected {expect}, got "
                                 f"{r.status_code} {r.text[:300]}")
            return None
        if 200 <= r.status_code < 300:
            self.ok += 1
        else:
            self.refused += 1
        return r

    def get(self, path):
        i, gen = self.pool.acquire(self.node_rng)
        try:
            return self._session(i, gen).get(self.pool.cps[i].admin_url + path, timeout=30)
        finally:
            self.pool.release(i)

    def created(self, r, lookup):
        """The created entity: from the answer, or (after a retried create) read back."""
        if r is None:
            return None
        if r.status_code in (200, 201):
            return r.json()
        g = self.get(lookup)
        return g.json() if g.status_code == 200 else None

    # -- helpers ----------------------------------------------------------------------------

    def name(self, kind):
        self.n += 1
        return f"w{self.t}{kind}{self.n:05d}"

    def pick(self, d):
        return self.rng.choice(sorted(d)) if d else None

    def ref(self, entity_id, name):
        """Address an entity by id or by its endpoint key, at random."""
        return entity_id if self.rng.random() < 0.5 else name

    def drop_plugins(self, scope, owner):
        for pid in [p for p, v in self.plugins.items()
                    if (v["scope"], v["owner"]) == (scope, owner)]:
            del self.plugins[pid]

    def drop_creds(self, consumer):
        for cid in [c for c, v in self.creds.items() if v["consumer"] == consumer]:
            self.deleted_keys.append(self.creds.pop(cid)["key"])

    # -- operations: each returns False when it does not apply now ---------------------------

    def svc_create(self):
        if len(self.services) >= self.CAPS["services"]:
            return False
        name, path = self.name("s"), f"/p{self.n}"
        r = self.call("POST", "/services", {"name": name, "url": self.up + path}, 201, (409,))
        e = self.created(r, f"/services/{name}")
        if e:
            self.services[name] = {"id": e["id"], "path": path}
        return True

    def svc_update(self):
        name = self.pick(self.services)
        if not name:
            return False
        s = self.services[name]
        if self.rng.random() < 0.6:
            path = f"/q{self.name('x')}"
            if self.call("PATCH", f"/services/{self.ref(s['id'], name)}", {"path": path}):
                s["path"] = path
        else:
            self.call("PATCH", f"/services/{self.ref(s['id'], name)}",
                      {"retries": self.rng.randint(0, 10),
                       "read_timeout": self.rng.randint(1000, 60000)})
        return True

    def svc_delete(self):
        name = self.pick(self.services)
        if not name:
            return False
        s = self.services[name]
        routes = sorted(r for r, v in self.routes.items() if v["service"] == name)
        if routes and self.rng.random() < 0.3:
            # still referenced by routes: refused, nothing changes
            self.call("DELETE", f"/services/{name}", expect=400)
            return True
        for rn in routes:  # empty it through the nested path, each route taking its plugins
            if self.call("DELETE", f"/services/{name}/routes/{self.ref(self.routes[rn]['id'], rn)}",
                         expect=204, again=(404,)):
                del self.routes[rn]
                self.drop_plugins("routes", rn)
        if any(v["service"] == name for v in self.routes.values()):
            return True
        if self.call("DELETE", f"/services/{self.ref(s['id'], name)}", expect=204, again=(404,)):
            del self.services[name]
            self.drop_plugins("services", name)  # cascade
        return True

    def route_create(self):
        svc = self.pick(self.services)
        if not svc or len(self.routes) >= self.CAPS["routes"]:
            return False
        name = self.name("r")
        path, strip = f"/{name}", self.rng.random() < 0.7
        if self.rng.random() < 0.05:  # a parent that does not exist: refused
            self.call("POST", f"/services/{name}-missing/routes", {"paths": [path]}, 404)
            return True
        r = self.call("POST", f"/services/{svc}/routes",
                      {"name": name, "paths": [path], "strip_path": strip}, 201, (409,))
        e = self.created(r, f"/routes/{name}")
        if e:
            self.routes[name] = {"id": e["id"], "service": svc, "path": path, "strip": strip}
        return True

    def route_update(self):
        name = self.pick(self.routes)
        if not name:
            return False
        rt, roll = self.routes[name], self.rng.random()
        where = f"/routes/{self.ref(rt['id'], name)}"
        if roll < 0.35:
            if self.call("PATCH", where, {"strip_path": not rt["strip"]}):
                rt["strip"] = not rt["strip"]
        elif roll < 0.7:
            path = f"/{self.name('r')}"
            if self.call("PATCH", where, {"paths": [path]}):
                rt["path"] = path
        else:
            svc = self.pick(self.services)
            if self.call("PATCH", where, {"service": {"id": self.services[svc]["id"]}}):
                rt["service"] = svc
        return True

    def route_delete(self):
        name = self.pick(self.routes)
        if not name:
            return False
        if self.call("DELETE", f"/routes/{self.ref(self.routes[name]['id'], name)}", expect=204,
                     again=(404,)):
            del self.routes[name]
            self.drop_plugins("routes", name)
        return True

    def consumer_create(self):
        if len(self.consumers) >= self.CAPS["consumers"]:
            return False
        if self.consumers and self.rng.random() < 0.05:  # duplicate username: refused
            self.call("POST", "/consumers", {"username": self.pick(self.consumers)}, expect=409)
            return True
        name = self.name("c")
        if self.rng.random() < 0.3:  # PUT upsert of a new username
            r = self.call("PUT", f"/consumers/{name}", {"custom_id": f"cid-{name}"}, 200)
            e = r.json() if r is not None else None
        else:
            r = self.call("POST", "/consumers", {"username": name, "custom_id": f"cid-{name}"},
                          201, (409,))
            e = self.created(r, f"/consumers/{name}")
        if e:
            self.consumers[name] = {"id": e["id"]}
        return True

    def consumer_update(self):
        name = self.pick(self.consumers)
        if not name:
            return False
        c = self.consumers[name]
        custom = f"cid-{self.name('x')}"
        if self.rng.random() < 0.5:
            self.call("PATCH", f"/consumers/{self.ref(c['id'], name)}", {"custom_id": custom})
        else:  # PUT on an existing username replaces it, keeping its id
            r = self.call("PUT", f"/consumers/{name}", {"custom_id": custom}, 200)
            if r is not None and r.json()["id"] != c["id"]:
                self.failures.append(f"PUT /consumers/{name} changed its id")
        return True

    def consumer_delete(self):
        name = self.pick(self.consumers)
        if not name:
            return False
        if self.call("DELETE", f"/consumers/{self.ref(self.consumers[name]['id'], name)}",
                     expect=204, again=(404,)):
            del self.consumers[name]
            self.drop_creds(name)  # cascade
            self.drop_plugins("consumers", name)
        return True

    def cred_create(self):
        name = self.pick(self.consumers)
        if not name or len(self.creds) >= self.CAPS["creds"]:
            return False
        key = f"key-{self.name('k')}"
        r = self.call("POST", f"/consumers/{name}/key-auth", {"key": key}, 201, (409,))
        e = self.created(r, f"/key-auths/{key}")
        if e:
            self.creds[e["id"]] = {"consumer": name, "key": key}
        return True

    def cred_update(self):
        cid = self.pick(self.creds)
        if not cid:
            return False
        cr = self.creds[cid]
        key = f"key-{self.name('k')}"
        if self.call("PATCH", f"/consumers/{cr['consumer']}/key-auth/{cid}", {"key": key}):
            self.deleted_keys.append(cr["key"])
            cr["key"] = key
        return True

    def cred_delete(self):
        cid = self.pick(self.creds)
        if not cid:
            return False
        cr = self.creds[cid]
        path = (f"/consumers/{cr['consumer']}/key-auth/{cid}" if self.rng.random() < 0.5
                else f"/key-auths/{cid}")
        if self.call("DELETE", path, expect=204, again=(404,)):
            self.deleted_keys.append(self.creds.pop(cid)["key"])
        return True

    def plugin_create(self):
        if len(self.plugins) >= self.CAPS["plugins"]:
            return False
        kind = self.rng.choice(["key-auth", "rate-limiting"])
        scopes = ["routes", "services"] + (["consumers"] if kind == "rate-limiting" else [])
        scope = self.rng.choice(scopes)
        owners = {"routes": self.routes, "services": self.services, "consumers": self.consumers}
        taken = {v["owner"] for v in self.plugins.values()
                 if v["scope"] == scope and v["name"] == kind}
        free = sorted(set(owners[scope]) - taken)
        if not free:
            return False
        owner = self.rng.choice(free)
        config = ({"key_names": list(self.rng.choice(KEY_NAMES))} if kind == "key-auth"
                  else {"minute": self.rng.randint(1000, 99999)})
        r = self.call("POST", f"/{scope}/{owner}/plugins", {"name": kind, "config": config}, 201)
        if r is not None:
            self.plugins[r.json()["id"]] = {"name": kind, "scope": scope, "owner": owner,
                                            "config": config, "enabled": True}
        return True

    def plugin_update(self):
        pid = self.pick(self.plugins)
        if not pid:
            return False
        p = self.plugins[pid]
        if self.rng.random() < 0.3:
            if self.call("PATCH", f"/plugins/{pid}", {"enabled": not p["enabled"]}):
                p["enabled"] = not p["enabled"]
            return True
        config = ({"key_names": list(self.rng.choice(KEY_NAMES))} if p["name"] == "key-auth"
                  else {"minute": self.rng.randint(1000, 99999)})
        if self.call("PATCH", f"/plugins/{pid}", {"config": config}):
            p["config"] = config
        return True

    def plugin_delete(self):
        pid = self.pick(self.plugins)
        if not pid:
            return False
        p = self.plugins[pid]
        path = (f"/{p['scope']}/{p['owner']}/plugins/{pid}" if self.rng.random() < 0.5
                else f"/plugins/{pid}")
        if self.call("DELETE", path, expect=204, again=(404,)):
            del self.plugins[pid]
        return True

    OPS = [  # (weight, method name)
        (4, "svc_create"), (4, "svc_update"), (1, "svc_delete"),
        (8, "route_create"), (6, "route_update"), (3, "route_delete"),
        (8, "consumer_create"), (4, "consumer_update"), (3, "consumer_delete"),
        (10, "cred_create"), (4, "cred_update"), (4, "cred_delete"),
        (8, "plugin_create"), (8, "plugin_update"), (4, "plugin_delete"),
    ]

    def step(self):
        names = [n for _, n in self.OPS]
        weights = [w for w, _ in self.OPS]
        for _ in range(50):
            op = self.rng.choices(names, weights)[0]
            if getattr(self, op)():
                self.counts[op] = self.counts.get(op, 0) + 1
                return

    def run(self, stop):
        try:
            while not stop.is_set() and self.budget():
                self.step()
        except Exception as e:  # noqa: BLE001 - reported by the test, not lost in a thread
            self.failures.append(f"writer {self.t} stopped: {e!r}")
        finally:
            for _, s in self.sessions.values():
                s.close()


class Model:
    """The expected final configuration: the union of every writer's entities."""

    def __init__(self, writers):
        self.services, self.routes, self.consumers, self.creds, self.plugins = {}, {}, {}, {}, {}
        self.deleted_keys = []
        for w in writers:
            self.services.update(w.services)
            self.routes.update(w.routes)
            self.consumers.update(w.consumers)
            self.creds.update(w.creds)
            self.plugins.update(w.plugins)
            self.deleted_keys += w.deleted_keys

    def ids(self):
        return {"services": {v["id"] for v in self.services.values()},
                "routes": {v["id"] for v in self.routes.values()},
                "consumers": {v["id"] for v in self.consumers.values()},
                "plugins": set(self.plugins),
                "keyauth_credentials": set(self.creds)}

    def _plugin(self, name, scope, owner):
        for pid, p in self.plugins.items():
            if (p["name"], p["scope"], p["owner"]) == (name, scope, owner) and p["enabled"]:
                return p
        return None

    def key_auth(self, route):
        """The key-auth instance that runs on `route` (route level first), or None."""
        return (self._plugin("key-auth", "routes", route)
                or self._plugin("key-auth", "services", self.routes[route]["service"]))

    def rate_limit(self, route, consumer):
        p = ((consumer and self._plugin("rate-limiting", "consumers", consumer))
             or self._plugin("rate-limiting", "routes", route)
             or self._plugin("rate-limiting", "services", self.routes[route]["service"]))
        return p["config"]["minute"] if p else None

    def expected(self, route, key):
        """What GET <route path>/x sent with `key` (None: no key) must get:
        {"status", "consumer" (username or None), "path" (upstream path), "limit"}."""
        rt = self.routes[route]
        ka = self.key_auth(route)
        consumer = None
        if ka:
            if key is None:
                return {"status": 401, "message": "No API key found in request"}
            owner = [c["consumer"] for c in self.creds.values() if c["key"] == key]
            if not owner:
                return {"status": 401, "message": "Unauthorized"}  # Kong 3.10
            consumer = owner[0]
        svc_path = self.services[rt["service"]]["path"]
        rest = "/x" if rt["strip"] else rt["path"] + "/x"
        return {"status": 200, "consumer": consumer, "path": svc_path + rest,
                "limit": self.rate_limit(route, consumer)}
