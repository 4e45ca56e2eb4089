-- Boxyard control plane schema, version 1.
--
-- Conventions: ids are UUIDv7 (time-ordered, so keyset pagination by id follows creation order); states are text
-- with CHECK constraints (readable in psql, cheap to extend); times are timestamptz.

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per org. Concurrent creates in one org serialize on this row (SELECT ... FOR UPDATE).
CREATE TABLE org_quotas (
    org_id              uuid PRIMARY KEY REFERENCES orgs(id) ON DELETE CASCADE,
    max_boxes           integer NOT NULL CHECK (max_boxes >= 0),
    max_vcpus           integer NOT NULL CHECK (max_vcpus >= 0),
    max_memory_mib      bigint  NOT NULL CHECK (max_memory_mib >= 0),
    max_box_vcpus       integer NOT NULL CHECK (max_box_vcpus >= 0),
    max_box_memory_mib  bigint  NOT NULL CHECK (max_box_memory_mib >= 0),
    max_box_disk_mib    bigint  NOT NULL CHECK (max_box_disk_mib >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- API keys: only a SHA-256 of the whole key is stored; the prefix (also part of the key) identifies it in lists.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name          text NOT NULL,
    prefix        text NOT NULL UNIQUE,
    hash          bytea NOT NULL,
    role          text NOT NULL CHECK (role IN ('member', 'admin', 'platform_admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    uuid REFERENCES api_keys(id) ON DELETE SET NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_org ON api_keys (org_id);

-- Join tokens let a runner register. Reusable until they expire or are revoked (one token can enrol a fleet).
CREATE TABLE join_tokens (
    id          uuid PRIMARY KEY,
    prefix      text NOT NULL UNIQUE,
    hash        bytea NOT NULL,
    description text NOT NULL DEFAULT '',
    created_by  uuid REFERENCES api_keys(id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    uses        integer NOT NULL DEFAULT 0
);

CREATE TABLE runners (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    -- How to reach the runner API (updated by every heartbeat).
    address             text NOT NULL,
    tls_server_name     text NOT NULL,
    tls_ca_pem          text NOT NULL,
    -- Presented to the runner API; the runner chose it. Stored as is: the control plane has to send it.
    api_token           text NOT NULL,
    -- SHA-256 of the credential the runner presents to the registry.
    credential_hash     bytea NOT NULL,
    labels              jsonb NOT NULL DEFAULT '{}',
    capacity_vcpus      integer NOT NULL,
    capacity_memory_mib bigint NOT NULL,
    capacity_disk_mib   bigint NOT NULL,
    -- As reported by the runner in its last heartbeat (the scheduler counts reservations from `boxes`).
    reported_boxes      integer NOT NULL DEFAULT 0,
    reported_running    integer NOT NULL DEFAULT 0,
    cached_snapshots    text[] NOT NULL DEFAULT '{}',
    state               text NOT NULL CHECK (state IN ('ready', 'unresponsive', 'lost')),
    draining            boolean NOT NULL DEFAULT false,
    cordoned            boolean NOT NULL DEFAULT false,
    version             text NOT NULL DEFAULT '',
    backend             text NOT NULL DEFAULT '',
    registered_at       timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at   timestamptz NOT NULL DEFAULT now(),
    join_token_id       uuid REFERENCES join_tokens(id) ON DELETE SET NULL
);

CREATE TABLE boxes (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name              text,
    snapshot          text,
    vcpus             integer NOT NULL,
    memory_mib        bigint NOT NULL,
    disk_mib          bigint NOT NULL,
    env               jsonb NOT NULL DEFAULT '{}',
    labels            jsonb NOT NULL DEFAULT '{}',
    runner_selector   jsonb NOT NULL DEFAULT '{}',
    runner_id         uuid REFERENCES runners(id) ON DELETE SET NULL,
    -- Whether the box's vCPUs and memory count against its runner's capacity.
    reserved          boolean NOT NULL DEFAULT false,
    state             text NOT NULL CHECK (state IN ('pending', 'starting', 'running', 'stopping', 'stopped', 'error', 'lost')),
    desired_state     text NOT NULL CHECK (desired_state IN ('running', 'stopped', 'deleted')),
    reason            text,
    auto_stop_seconds integer,
    ttl_seconds       integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    stopped_at        timestamptz,
    last_activity_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    -- Set once the runner confirmed the box is gone (or never had it).
    destroyed_at      timestamptz
);
CREATE INDEX boxes_org ON boxes (org_id, id) WHERE deleted_at IS NULL;
CREATE INDEX boxes_runner_reserved ON boxes (runner_id) WHERE reserved;
CREATE INDEX boxes_reconcile ON boxes (state, desired_state) WHERE destroyed_at IS NULL;

CREATE TABLE executions (
    id            uuid PRIMARY KEY,
    box_id        uuid NOT NULL REFERENCES boxes(id) ON DELETE CASCADE,
    org_id        uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    command       jsonb NOT NULL,
    env           jsonb NOT NULL DEFAULT '{}',
    working_dir   text,
    user_name     text,
    tty           boolean NOT NULL DEFAULT false,
    stdin         boolean NOT NULL DEFAULT false,
    timeout_ms    bigint,
    state         text NOT NULL CHECK (state IN ('running', 'finished', 'lost')),
    exit_code     integer,
    signal        text,
    timed_out     boolean NOT NULL DEFAULT false,
    killed        boolean NOT NULL DEFAULT false,
    error         text,
    output_start  bigint NOT NULL DEFAULT 0,
    output_bytes  bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX executions_box ON executions (box_id, id);
CREATE INDEX executions_running ON executions (box_id) WHERE state = 'running';

-- Idempotency-Key: the first request with a key stores its response; a retry gets the same response.
CREATE TABLE idempotency_keys (
    org_id        uuid NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    key           text NOT NULL,
    operation     text NOT NULL,
    request_hash  bytea NOT NULL,
    status        integer,
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, key)
);

CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_key   uuid,
    actor_org   uuid,
    action      text NOT NULL,
    target      text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'
);
