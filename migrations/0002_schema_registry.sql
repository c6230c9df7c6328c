-- The store of `recq registry`, the small Confluent-compatible schema registry used for local runs
-- and tests. Ids are global: one row per distinct schema (its normalized text), however many
-- subjects it is registered under; a subject's versions are 1, 2, 3, ... in registration order.

CREATE TABLE registry_schemas (
    id           integer     GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schema_type  text        NOT NULL CHECK (schema_type IN ('AVRO', 'JSON', 'PROTOBUF')),
    -- The normalized schema text: what identifies the schema and what readers get back.
    schema       text        NOT NULL,
    -- sha256 of `schema`: the unique key (a b-tree cannot index arbitrarily long text), kept
    -- honest by the CHECK so that two different texts can never share a row.
    schema_hash  bytea       NOT NULL CHECK (schema_hash = sha256(convert_to(schema, 'UTF8'))),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schema_type, schema_hash)
);

-- One row per subject that has ever had a version. Registrations lock their subject's row, so the
-- compatibility check and the next version number are decided one registration at a time.
CREATE TABLE registry_subjects (
    name        text        PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE registry_versions (
    subject     text        NOT NULL REFERENCES registry_subjects (name),
    version     integer     NOT NULL CHECK (version >= 1),
    schema_id   integer     NOT NULL REFERENCES registry_schemas (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version),
    -- A schema appears at most once in a subject: re-registering it returns its version.
    UNIQUE (subject, schema_id)
);

CREATE INDEX registry_versions_schema_id_idx ON registry_versions (schema_id);
