-- Snapshots: named, immutable root filesystem images in the S3 bucket.

CREATE TABLE snapshots (
    id               uuid PRIMARY KEY,
    -- NULL: published by a platform admin to every org.
    org_id           uuid REFERENCES orgs(id) ON DELETE CASCADE,
    name             text NOT NULL,
    state            text NOT NULL CHECK (state IN ('uploading', 'verifying', 'active', 'failed')),
    reason           text,
    object_key       text NOT NULL,
    -- Set once the image is stored and its digest known (or checked, for a registered object).
    digest           text,
    size_bytes       bigint,
    metadata         jsonb NOT NULL DEFAULT '{}',
    -- An upload in progress (at most one per snapshot, across replicas).
    uploading_since  timestamptz,
    created_by       uuid REFERENCES api_keys(id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX snapshots_name ON snapshots (coalesce(org_id, '00000000-0000-0000-0000-000000000000'::uuid), name);

ALTER TABLE boxes ADD COLUMN snapshot_id uuid REFERENCES snapshots(id);
ALTER TABLE boxes ADD COLUMN snapshot_digest text;
CREATE INDEX boxes_snapshot ON boxes (snapshot_id) WHERE deleted_at IS NULL;
