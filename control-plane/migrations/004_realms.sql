-- 004_realms: centrally managed consumers (Konnect's "realms", DESIGN.md §4, docs/realms.md).
--
-- A realm lives outside every control plane; `allowed_control_planes` names the control planes
-- whose data planes may authenticate against it ('*' = all of them, empty = none). Realm
-- consumers and their keys are never part of a control plane's configuration push: data planes
-- look keys up one at a time (by SHA-256 digest) and cache the answers for `ttl` minutes (hits)
-- or `negative_ttl` minutes (misses). Keys are stored ONLY as digests: the secret is shown once,
-- in the create response, and cannot be recovered from a dump.
--
-- Writes that can revoke access NOTIFY 'tollgate_realms' (payload in realms/realm_store.h); the
-- notification is sent by the writing transaction, so PostgreSQL delivers it only at commit.

CREATE TABLE realms (
    id                     uuid PRIMARY KEY,
    name                   text NOT NULL CONSTRAINT realms_name_key UNIQUE,
    -- control plane ids (text so that '*' fits); validated by the API, cleaned by the trigger below
    allowed_control_planes text[] NOT NULL DEFAULT '{}',
    ttl                    integer NOT NULL DEFAULT 10 CHECK (ttl >= 5),          -- minutes
    negative_ttl           integer NOT NULL DEFAULT 10 CHECK (negative_ttl >= 5), -- minutes
    consumer_groups        text[] NOT NULL DEFAULT '{}',
    created_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at             timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Cursor pagination walks (created_at, id).
CREATE INDEX realms_page_idx ON realms (created_at, id);

CREATE TABLE realm_consumers (
    realm_id        uuid NOT NULL REFERENCES realms (id) ON DELETE CASCADE,
    id              uuid PRIMARY KEY,
    username        text NOT NULL,
    custom_id       text,
    type            text,
    tags            text[] NOT NULL DEFAULT '{}',
    consumer_groups text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT realm_consumers_realm_id_key UNIQUE (realm_id, id),
    CONSTRAINT realm_consumers_custom_id_key UNIQUE (realm_id, custom_id)
);
-- Konnect keeps `username_lower` beside the username: usernames are unique per realm without
-- regard to case ("Ariel" and "ariel" are the same consumer to a human reading the headers).
CREATE UNIQUE INDEX realm_consumers_username_key ON realm_consumers (realm_id, lower(username));
CREATE INDEX realm_consumers_page_idx ON realm_consumers (realm_id, created_at, id);

CREATE TABLE realm_keys (
    realm_id    uuid NOT NULL,
    consumer_id uuid NOT NULL,
    id          uuid PRIMARY KEY,
    type        text NOT NULL CHECK (type IN ('new', 'legacy')),
    key_digest  bytea NOT NULL CHECK (length(key_digest) = 32), -- SHA-256 of the secret
    tags        text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- A consumer moved to another realm takes its keys along (ON UPDATE CASCADE).
    CONSTRAINT realm_keys_consumer_fkey FOREIGN KEY (realm_id, consumer_id)
        REFERENCES realm_consumers (realm_id, id) ON DELETE CASCADE ON UPDATE CASCADE,
    -- The data plane's lookup: (realm, digest) → key; also keeps secrets unique per realm.
    CONSTRAINT realm_keys_digest_key UNIQUE (realm_id, key_digest)
);
CREATE INDEX realm_keys_page_idx ON realm_keys (consumer_id, created_at, id);

-- A deleted control plane disappears from every realm's allow-list, so an id cannot be
-- reused to inherit access (ids are random, but the list should not keep dangling ids).
CREATE FUNCTION tollgate_realms_forget_control_plane() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE realms SET allowed_control_planes = array_remove(allowed_control_planes, OLD.id::text),
                      updated_at = clock_timestamp()
     WHERE OLD.id::text = ANY (allowed_control_planes);
    RETURN NULL;
END $$;
CREATE TRIGGER control_planes_forget_in_realms AFTER DELETE ON control_planes
    FOR EACH ROW EXECUTE FUNCTION tollgate_realms_forget_control_plane();
