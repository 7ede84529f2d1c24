CREATE TABLE visits (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    release text NOT NULL
);
