-- Reconciliation: the fleet's lease, so that one run at a time (of any
-- worker of any nginx) settles lg:{fleet}:reconcile's entries.
--
-- KEYS[1]  lg:{fleet}:reconcile:lease
-- ARGV[1]  the run's token          ARGV[2]  "take" or "give"
-- ARGV[3]  take: the lease, ms
--
-- take: 1 when taken, 0 when another run holds it.
-- give: 1 when given back, 0 when it was no longer this run's (it
--       expired, another run took it): never frees another run's lease.

if ARGV[2] == 'take' then
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3]) then
        return 1
    end
    return 0
end

if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
end

return 0
