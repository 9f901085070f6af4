-- 002_cluster: the cluster's trust (DESIGN.md §6) and the data planes' records.
--
-- cluster_ca     the one CA every CP node shares; its private key is AES-256-GCM encrypted
--                under the keyring key (associated data "cluster_ca"), so a dump leaks nothing.
-- join_tokens    bootstrap tokens "id.secret": the id is public, only SHA-256 of the whole
--                token is stored.
-- data_planes    one row per enrolled DP node (id = node id, also in its certificate); the
--                sync server fills the status columns.
-- cluster_nodes  every CP node's cluster endpoint, so DPs learn all of them at join.

CREATE TABLE cluster_ca (
    id         smallint PRIMARY KEY CHECK (id = 1),
    cert_pem   text NOT NULL,
    key_enc    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE join_tokens (
    id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{6}$'),
    cp_id         uuid NOT NULL REFERENCES control_planes (id) ON DELETE CASCADE,
    secret_digest bytea NOT NULL CHECK (length(secret_digest) = 32),
    expires_at    timestamptz NOT NULL,
    uses_left     integer CHECK (uses_left IS NULL OR uses_left >= 0), -- NULL = unlimited
    description   text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX join_tokens_cp_idx ON join_tokens (cp_id, created_at);

CREATE TABLE data_planes (
    id               uuid PRIMARY KEY,
    cp_id            uuid NOT NULL REFERENCES control_planes (id) ON DELETE CASCADE,
    hostname         text,
    token_id         text, -- the token it joined with (kept after the token is deleted)
    cert_serial      text, -- lower-case hex; only the certificate with this serial may sync
    cert_expires_at  timestamptz,
    revoked_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- filled by the sync server
    address          text,
    tollgate_version text,
    config_version   bigint NOT NULL DEFAULT 0,
    config_digest    text,
    sync_status      text NOT NULL DEFAULT 'unknown',
    last_error       text,
    last_seen        timestamptz,
    cp_node          text,
    lag_versions     bigint,
    lag_seconds      double precision
);
CREATE INDEX data_planes_cp_idx ON data_planes (cp_id, created_at);

CREATE TABLE cluster_nodes (
    node_id    uuid PRIMARY KEY,
    endpoint   text NOT NULL, -- host:port that DPs use
    hostname   text,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);
