-- Whether a runner has a snapshot store (reported in heartbeats); the scheduler places snapshot boxes only there.
ALTER TABLE runners ADD COLUMN snapshots_enabled boolean NOT NULL DEFAULT false;
