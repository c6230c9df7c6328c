-- recq's projection of the jobs log. Every row here is derived from events in Kafka:
-- recommendation_queues and recommendations equal the fold of the log up to projector_offsets.

CREATE TYPE job_status AS ENUM ('queue', 'process', 'done', 'failed');

CREATE TABLE users (
    id          integer PRIMARY KEY CHECK (id > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The seed's RecommendationQueue model, same fields and meaning, plus what its "potential
-- issues" asked for: started_at/finished_at (a restart cannot lose processing time), attempt,
-- last_error, and seq (the per-job event sequence that keeps rows from moving backwards).
CREATE TABLE recommendation_queues (
    job_id           uuid        PRIMARY KEY,
    user_id          integer     NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status           job_status  NOT NULL DEFAULT 'queue',
    processing_time  integer     NOT NULL DEFAULT 0 CHECK (processing_time >= 0),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    attempt          integer     NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    last_error       text,
    seq              bigint      NOT NULL CHECK (seq >= 1)
);

-- job_id is indexed by its primary key.
CREATE INDEX recommendation_queues_user_id_idx ON recommendation_queues (user_id);
CREATE INDEX recommendation_queues_status_idx ON recommendation_queues (status);

-- The top-N list of a finished job, one row per rank.
CREATE TABLE recommendations (
    job_id    uuid             NOT NULL,
    rank      smallint         NOT NULL CHECK (rank >= 1),
    user_id   integer          NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    movie_id  integer          NOT NULL,
    title     text             NOT NULL,
    score     double precision NOT NULL,
    PRIMARY KEY (job_id, rank)
);

CREATE INDEX recommendations_user_id_idx ON recommendations (user_id);

-- The projector's position in each partition it consumes: the offset of the next event to
-- apply. Written in the same transaction as the rows, so rows and positions never disagree.
CREATE TABLE projector_offsets (
    topic        text        NOT NULL,
    partition    integer     NOT NULL CHECK (partition >= 0),
    next_offset  bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
