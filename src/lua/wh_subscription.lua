-- A Stripe subscription event sets a workspace's base-plan status and plan.
--
-- KEYS[1]  lg:{ws:W}:event:<event id> (de-duplication, under the
--          workspace's tag: one slot, issue 10)
-- KEYS[2]  lg:{ws:W}, W the subscription's metadata.workspace_id
-- ARGV[1]  subscription status ('canceled' for a deleted subscription)
-- ARGV[2]  plan from the configured price-to-plan map, or ''
-- ARGV[3]  the event's creation time (Unix s): older events lose
-- ARGV[4]  now, ISO 8601
-- ARGV[5]  seconds to remember event ids
--
-- Returns  {0} duplicate, {1} unknown workspace, {2} stale event,
--          {3} applied
--
-- The event id is remembered only once the event is applied (or found
-- stale): an event for a workspace that does not exist yet is not
-- marked, and the caller answers non-2xx so that Stripe delivers it
-- again, and it is applied once the workspace is there.

local ekey = KEYS[1]
if redis.call('EXISTS', ekey) == 1 then
    return {0}
end

local wkey = KEYS[2]
if redis.call('EXISTS', wkey) == 0 then
    return {1}
end

-- Stripe does not promise order: an older event must not undo a newer one
local last = tonumber(redis.call('HGET', wkey, 'subscriptionEventAt') or '0')
if tonumber(ARGV[3]) < last then
    redis.call('SET', ekey, ARGV[4], 'EX', tonumber(ARGV[5]))
    return {2}
end

redis.call('HSET', wkey, 'subscriptionStatus', ARGV[1],
           'subscriptionEventAt', ARGV[3], 'updatedAt', ARGV[4])
if ARGV[2] ~= '' then
    redis.call('HSET', wkey, 'plan', ARGV[2])
end

redis.call('SET', ekey, ARGV[4], 'EX', tonumber(ARGV[5]))

return {3}
