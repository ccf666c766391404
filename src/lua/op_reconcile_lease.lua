-- Reconciliation: the fleet's lease, so that one run at a time (of any
-- worker of any nginx) settles lg:{fleet}:reconcile's entries, and the
-- runs' cursor: where the last run left the stream, so that the next one
-- starts past it (and comes round to the older entries after the newest)
-- instead of at the oldest entries every time: a run looks at 100 entries
-- at most, and entries left for a human must not keep the others waiting.
--
-- KEYS[1]  lg:{fleet}:reconcile:lease
-- KEYS[2]  lg:{fleet}:reconcile:cursor
-- ARGV[1]  the run's token          ARGV[2]  "take", "renew" or "give"
-- ARGV[3]  take, renew: the lease, ms
-- ARGV[4]  give: the id of the last entry the run looked at, or "" (it
--          looked at none: the cursor stays)
--
-- take: {1, the cursor or ""} when taken, {0} when another run holds it.
-- renew: 1 when still this run's (its time to live set to ARGV[3]
--       again), 0 when it expired (another run may hold it): a run past
--       its lease makes no more Stripe calls.
-- give: 1 when given back (and the cursor written), 0 when it was no
--       longer this run's (it expired, another run took it): never frees
--       another run's lease, nor moves the cursor under it.

if ARGV[2] == 'take' then
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
        return {1, redis.call('GET', KEYS[2]) or ''}
    end
    return {0}
end

if ARGV[2] == 'renew' then
    if redis.call('GET', KEYS[1]) == ARGV[1] then
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        return 1
    end
    return 0
end

if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    if ARGV[4] ~= '' then
        redis.call('SET', KEYS[2], ARGV[4])
    end
    return 1
end

return 0
