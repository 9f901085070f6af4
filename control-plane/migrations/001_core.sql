-- 001_core: control planes, Kong's core entities, the change log, admin tokens.
--
-- Each entity table keeps the full entity as `doc` (what the Admin API
-- returns, minus secrets) plus the columns that need constraints or indexes:
-- unique fields, foreign keys (composite with cp_id so a reference can never
-- cross control planes), tags. Cascades are done by the DAO so that every
-- deleted child gets its own change-log row; the FKs are the safety net.

CREATE TABLE control_planes (
    id             uuid PRIMARY KEY,
    name           text NOT NULL CONSTRAINT control_planes_name_key UNIQUE,
    description    text,
    labels         jsonb NOT NULL DEFAULT '{}',
    config_version bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO control_planes (id, name, description)
VALUES (gen_random_uuid(), 'default', 'The control plane addressed by the root Admin API paths');

CREATE TABLE services (
    cp_id      uuid NOT NULL REFERENCES control_planes (id) ON DELETE CASCADE,
    id         uuid PRIMARY KEY,
    name       text,
    created_at bigint NOT NULL,
    tags       text[] NOT NULL DEFAULT '{}',
    doc        jsonb NOT NULL,
    CONSTRAINT services_cp_id_key UNIQUE (cp_id, id),
    CONSTRAINT services_name_key UNIQUE (cp_id, name)
);

CREATE TABLE routes (
    cp_id      uuid NOT NULL REFERENCES control_planes (id) ON DELETE CASCADE,
    id         uuid PRIMARY KEY,
    name       text,
    service_id uuid,
    created_at bigint NOT NULL,
    tags       text[] NOT NULL DEFAULT '{}',
    doc        jsonb NOT NULL,
    CONSTRAINT routes_cp_id_key UNIQUE (cp_id, id),
    CONSTRAINT routes_name_key UNIQUE (cp_id, name),
    CONSTRAINT routes_service_fkey FOREIGN KEY (cp_id, service_id) REFERENCES services (cp_id, id)
);
CREATE INDEX routes_service_idx ON routes (cp_id, service_id, id);

CREATE TABLE consumers (
    cp_id      uuid NOT NULL REFERENCES control_planes (id) ON DELETE CASCADE,
    id         uuid PRIMARY KEY,
    username   text,
    custom_id  text,
    created_at bigint NOT NULL,
    tags       text[] NOT NULL DEFAULT '{}',
    doc        jsonb NOT NULL,
    CONSTRAINT consumers_cp_id_key UNIQUE (cp_id, id),
    CONSTRAINT consumers_username_key UNIQUE (cp_id, username),
    CONSTRAINT consumers_custom_id_key UNIQUE (cp_id, custom_id)
);

CREATE TABLE plugins (
    cp_id         uuid NOT NULL REFERENCES control_planes (id) ON DELETE CASCADE,
    id            uuid PRIMARY KEY,
    instance_name text,
    route_id      uuid,
    service_id    uuid,
    consumer_id   uuid,
    created_at    bigint NOT NULL,
    tags          text[] NOT NULL DEFAULT '{}',
    doc           jsonb NOT NULL,
    CONSTRAINT plugins_cp_id_key UNIQUE (cp_id, id),
    CONSTRAINT plugins_instance_name_key UNIQUE (cp_id, instance_name),
    CONSTRAINT plugins_route_fkey FOREIGN KEY (cp_id, route_id) REFERENCES routes (cp_id, id) ON DELETE CASCADE,
    CONSTRAINT plugins_service_fkey FOREIGN KEY (cp_id, service_id) REFERENCES services (cp_id, id) ON DELETE CASCADE,
    CONSTRAINT plugins_consumer_fkey FOREIGN KEY (cp_id, consumer_id) REFERENCES consumers (cp_id, id) ON DELETE CASCADE
);
-- One instance of a plugin per scope (Kong's cache_key {name, route, service, consumer}).
CREATE UNIQUE INDEX plugins_scope_key ON plugins (cp_id, (doc ->> 'name'),
    coalesce(route_id, '00000000-0000-0000-0000-000000000000'),
    coalesce(service_id, '00000000-0000-0000-0000-000000000000'),
    coalesce(consumer_id, '00000000-0000-0000-0000-000000000000'));
CREATE INDEX plugins_route_idx ON plugins (cp_id, route_id, id);
CREATE INDEX plugins_service_idx ON plugins (cp_id, service_id, id);
CREATE INDEX plugins_consumer_idx ON plugins (cp_id, consumer_id, id);

-- Keys are never stored in plaintext: a SHA-256 digest for lookups and an
-- AES-256-GCM copy under the keyring key so the Admin API can return `key`.
CREATE TABLE keyauth_credentials (
    cp_id       uuid NOT NULL REFERENCES control_planes (id) ON DELETE CASCADE,
    id          uuid PRIMARY KEY,
    consumer_id uuid NOT NULL,
    key_digest  bytea NOT NULL,
    key_enc     bytea NOT NULL,
    expires_at  bigint,
    created_at  bigint NOT NULL,
    tags        text[] NOT NULL DEFAULT '{}',
    doc         jsonb NOT NULL,
    CONSTRAINT keyauth_credentials_cp_id_key UNIQUE (cp_id, id),
    CONSTRAINT keyauth_credentials_key_key UNIQUE (cp_id, key_digest),
    CONSTRAINT keyauth_credentials_consumer_fkey FOREIGN KEY (cp_id, consumer_id) REFERENCES consumers (cp_id, id) ON DELETE CASCADE
);
CREATE INDEX keyauth_credentials_consumer_idx ON keyauth_credentials (cp_id, consumer_id, id);
CREATE INDEX keyauth_credentials_expiry_idx ON keyauth_credentials (expires_at) WHERE expires_at IS NOT NULL;

CREATE INDEX services_tags_idx ON services USING gin (tags);
CREATE INDEX routes_tags_idx ON routes USING gin (tags);
CREATE INDEX consumers_tags_idx ON consumers USING gin (tags);
CREATE INDEX plugins_tags_idx ON plugins USING gin (tags);
CREATE INDEX keyauth_credentials_tags_idx ON keyauth_credentials USING gin (tags);

-- The change log: one version per successful write, one change per touched entity.
CREATE TABLE config_versions (
    cp_id      uuid NOT NULL REFERENCES control_planes (id) ON DELETE CASCADE,
    version    bigint NOT NULL,
    changes    integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cp_id, version)
);
CREATE TABLE config_changes (
    cp_id       uuid NOT NULL,
    version     bigint NOT NULL,
    seq         integer NOT NULL,
    entity_type text NOT NULL,
    entity_id   uuid NOT NULL,
    op          text NOT NULL CHECK (op IN ('upsert', 'delete')),
    PRIMARY KEY (cp_id, version, seq),
    FOREIGN KEY (cp_id, version) REFERENCES config_versions (cp_id, version) ON DELETE CASCADE
);

-- NOTIFY is delivered at commit, so listeners only ever see committed versions.
CREATE FUNCTION tollgate_notify_config_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tollgate_config', NEW.cp_id::text || ':' || NEW.version::text);
    RETURN NULL;
END $$;
CREATE TRIGGER config_versions_notify AFTER INSERT ON config_versions
    FOR EACH ROW EXECUTE FUNCTION tollgate_notify_config_version();

CREATE TABLE admin_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    token_digest bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
