-- A Stripe subscription event sets a workspace's base-plan status and plan.
--
-- ARGV[1]  event id (de-duplication)
-- ARGV[2]  workspace id (the subscription's metadata.workspace_id)
-- ARGV[3]  subscription status ('canceled' for a deleted subscription)
-- ARGV[4]  plan from the configured price-to-plan map, or ''
-- ARGV[5]  the event's creation time (Unix s): older events lose
-- ARGV[6]  now, ISO 8601
-- ARGV[7]  seconds to remember event ids
--
-- Returns  {0} duplicate, {1} unknown workspace, {2} stale event,
--          {3} applied
--
-- The event id is remembered only once the event is applied (or found
-- stale): an event for a workspace that does not exist yet is not
-- marked, and the caller answers non-2xx so that Stripe delivers it
-- again, and it is applied once the workspace is there.

local ekey = 'lg:stripe:event:' .. ARGV[1]
if redis.call('EXISTS', ekey) == 1 then
    return {0}
end

local wkey = 'lg:{ws:' .. ARGV[2] .. '}'
if redis.call('EXISTS', wkey) == 0 then
    return {1}
end

-- Stripe does not promise order: an older event must not undo a newer one
local last = tonumber(redis.call('HGET', wkey, 'subscriptionEventAt') or '0')
if tonumber(ARGV[5]) < last then
    redis.call('SET', ekey, ARGV[6], 'EX', tonumber(ARGV[7]))
    return {2}
end

redis.call('HSET', wkey, 'subscriptionStatus', ARGV[3],
           'subscriptionEventAt', ARGV[5], 'updatedAt', ARGV[6])
if ARGV[4] ~= '' then
    redis.call('HSET', wkey, 'plan', ARGV[4])
end

redis.call('SET', ekey, ARGV[6], 'EX', tonumber(ARGV[7]))

return {3}
