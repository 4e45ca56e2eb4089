-- Optimistic concurrency for box state changes, and the order of runner reports.
--
-- generation: bumped by every write of a box's state; a writer names the generation it read, so two writers never
--             both win (the loser re-reads and decides again).
-- observed_version: the highest runner state version applied to the box (from call answers and heartbeats); a
--             report no newer than it is stale. 0: none, the next report wins (a new or lost box).
ALTER TABLE boxes ADD COLUMN generation bigint NOT NULL DEFAULT 0;
ALTER TABLE boxes ADD COLUMN observed_version bigint NOT NULL DEFAULT 0;
