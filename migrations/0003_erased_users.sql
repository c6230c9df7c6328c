-- Users erased through the log (topic recq.erasures). Events for them are dropped, so a late
-- event can neither bring their rows back nor fail on the users foreign key.
CREATE TABLE erased_users (
    user_id    integer     PRIMARY KEY CHECK (user_id > 0),
    erased_at  timestamptz NOT NULL
);
