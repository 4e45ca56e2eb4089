-- What is reserved on each runner, kept by the database itself in the same transaction as every change of a box
-- (a trigger), so that ranking runners for a placement reads one row per runner instead of aggregating every
-- reserved box. It only ranks: a reservation still re-checks the fit against the sum over the runner's boxes,
-- under the runner's row lock, so even a wrong row here could never overbook a runner.
-- No foreign key to runners, on purpose: its check would take a key-share lock on the runner's row from inside the
-- trigger, while a reservation holds that row FOR UPDATE and waits for this one (a deadlock). A removed runner's
-- row is deleted with it (store::runners::delete).
CREATE TABLE runner_usage (
    runner_id   uuid PRIMARY KEY,
    vcpus       bigint NOT NULL DEFAULT 0,
    memory_mib  bigint NOT NULL DEFAULT 0,
    -- Reserved boxes still pending or starting there (the score spreads bursts with it).
    starting    bigint NOT NULL DEFAULT 0
);

CREATE FUNCTION boxes_runner_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.reserved AND OLD.runner_id IS NOT NULL THEN
        UPDATE runner_usage SET vcpus = vcpus - OLD.vcpus, memory_mib = memory_mib - OLD.memory_mib,
               starting = starting - (OLD.state IN ('pending', 'starting'))::int
         WHERE runner_id = OLD.runner_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.reserved AND NEW.runner_id IS NOT NULL THEN
        INSERT INTO runner_usage AS u (runner_id, vcpus, memory_mib, starting)
        VALUES (NEW.runner_id, NEW.vcpus, NEW.memory_mib, (NEW.state IN ('pending', 'starting'))::int)
        ON CONFLICT (runner_id) DO UPDATE SET vcpus = u.vcpus + excluded.vcpus,
               memory_mib = u.memory_mib + excluded.memory_mib, starting = u.starting + excluded.starting;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER boxes_runner_usage AFTER INSERT OR DELETE OR UPDATE OF reserved, runner_id, vcpus, memory_mib, state
    ON boxes FOR EACH ROW EXECUTE FUNCTION boxes_runner_usage();

INSERT INTO runner_usage (runner_id, vcpus, memory_mib, starting)
SELECT runner_id, sum(vcpus), sum(memory_mib), count(*) FILTER (WHERE state IN ('pending', 'starting'))
  FROM boxes WHERE reserved AND runner_id IS NOT NULL GROUP BY runner_id;
