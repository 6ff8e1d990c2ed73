-- riverbank application schema.
--
-- This file is the whole schema, read by sqlc as one file and applied by
-- `riverbank migrate` as numbered steps. Rules (enforced by the migrator):
--   * a step starts with a line `-- riverbank:step <N> <name>`, N = 1, 2, 3, ...
--   * steps are append-only: a step that has been released is never edited;
--     a change is a new step at the end (ALTER TABLE ..., CREATE INDEX ...).
--     The migrator stores a checksum per applied step and refuses to run when
--     an applied step's text has changed.
--   * each step runs in its own transaction together with the row that
--     records it, so a step is applied completely or not at all.
-- River's own tables come from rivermigrate, applied before these steps.

-- riverbank:step 1 foundation
CREATE TABLE IF NOT EXISTS riverbank_schema_step (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
