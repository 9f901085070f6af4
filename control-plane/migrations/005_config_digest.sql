-- 005_config_digest: the control plane's config digest, kept current by every write.
--
-- Sync-protocol rule 5: the digest (config_digest.h: the sum modulo 2^256 of every entity's
-- SHA-256 hash) is maintained in O(1) per change. The DAO computes each write's contribution
-- (hashes of the rows it inserts or updates, minus those of the rows it replaces or deletes);
-- the change-log statement adds it to control_planes.config_digest and records the digest of
-- every version it writes. numeric holds the 256-bit value exactly and lets that statement do
-- the modular addition itself, under the row lock it already takes for the version counter.
--
-- NULL means "not known": control planes that held entities before this migration get theirs
-- computed by the control plane at start (config_row.h), and a NULL spreads to later versions
-- until then. A control plane that never had a config version has the empty config's digest, 0.
ALTER TABLE control_planes ADD COLUMN config_digest numeric;
ALTER TABLE control_planes ALTER COLUMN config_digest SET DEFAULT 0;
UPDATE control_planes SET config_digest = 0 WHERE config_version = 0;

ALTER TABLE config_versions ADD COLUMN digest numeric;

-- Listeners learn each version's digest with the version: "cp_id:version:digest" (digest in
-- decimal, empty when not known).
CREATE OR REPLACE FUNCTION tollgate_notify_config_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tollgate_config', NEW.cp_id::text || ':' || NEW.version::text || ':'
                      || coalesce(NEW.digest::text, ''));
    RETURN NULL;
END $$;
