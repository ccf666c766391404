-- A Stripe subscription event sets a workspace's base-plan status and plan.
--
-- KEYS[1]  lg:{ws:W}:event:<event id> (de-duplication, under the
--          workspace's tag: one slot, issue 10)
-- KEYS[2]  lg:{ws:W}, W the subscription's metadata.workspace_id
-- KEYS[3]  lg:{ws:W}:subend, the workspace's subscriptions seen ended
--          (zset: subscription id, scored with the Unix s its end was
--          last seen), so that a late live event of one is stale
-- ARGV[1]  subscription status ('canceled' for a deleted subscription),
--          one of Stripe's (incomplete, incomplete_expired, trialing,
--          active, past_due, canceled, unpaid, paused): webhook.c
--          acknowledges an event with another as ignored, before this
-- ARGV[2]  plan from the configured price-to-plan map, or ''
-- ARGV[3]  the event's creation time (Unix s): older events lose
-- ARGV[4]  now, ISO 8601
-- ARGV[5]  seconds to remember event ids
-- ARGV[6]  the subscription's id
-- ARGV[7]  the event's place in one subscription's life: 0 created,
--          1 updated, 2 deleted (events of one second are told apart by
--          it: created is a subscription's first, deleted its last)
-- ARGV[8]  the subscription's customer ('' when the event has none)
-- ARGV[9]  now, Unix s (how long ARGV[5] keeps an end seen)
--
-- Returns  {0} duplicate, {1} unknown workspace, {2} stale event (or
--          one of a subscription the workspace does not take: another
--          one's end, an incomplete one's while the followed is in
--          force, a live one's of a subscription seen ended), {3}
--          applied, {6} the workspace has no stripeCustomerId
--          to compare the event's customer with, {7} the event's customer
--          is not the workspace's (metadata.workspace_id is writable by
--          anyone with the Stripe account's dashboard): nothing done,
--          nothing remembered
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

local owner = redis.call('HGET', wkey, 'stripeCustomerId')
if not owner or owner == '' then
    return {6}
end
if owner ~= ARGV[8] then
    return {7}
end

local cur = redis.call('HMGET', wkey, 'subscriptionEventAt',
                       'subscriptionEventRank', 'subscriptionId',
                       'subscriptionStatus')
local last, last_rank = tonumber(cur[1] or '0'), tonumber(cur[2] or '0')
local at, rank = tonumber(ARGV[3]), tonumber(ARGV[7])

local ended = {canceled = true, incomplete_expired = true}
local ending = ended[ARGV[1]] == true

local skey, now, memory = KEYS[3], tonumber(ARGV[9]), tonumber(ARGV[5])

-- the most subscriptions one workspace keeps seen ended: far more than a
-- customer ends in the window, a bound on the zset whatever Stripe sends
local subend_max = 100

local seen_end
if not ending then
    seen_end = tonumber(redis.call('ZSCORE', skey, ARGV[6]) or '0')
end

local stale
if seen_end and seen_end > now - memory then
    -- Stripe never brings an ended subscription back (canceled and
    -- incomplete_expired are final): a live event of one seen ended is
    -- older than its end, whatever the subscription the workspace follows
    -- now (a retry, or a delivery resent by hand from the dashboard,
    -- after the one that replaced it ended too)
    stale = true
elseif cur[3] and cur[3] ~= '' and cur[3] ~= ARGV[6] then
    -- another subscription than the workspace's: its end does not end
    -- the workspace's (a plan changed by a new subscription, the old one
    -- deleted after); a live one follows the workspace's that ended, or
    -- replaces a live one it is not older than. An incomplete one is not
    -- in force yet (its first payment pending, 3DS say, and it expires
    -- if unpaid): it replaces only one not in force either, never one
    -- Stripe keeps (active, trialing, past_due, unpaid, paused), which
    -- would cost the workspace its plan for one that may never start;
    -- paid, its update to active replaces it
    if ended[ARGV[1]] then
        stale = true
    elseif ended[cur[4] or ''] then
        stale = false
    elseif ARGV[1] == 'incomplete' and cur[4] ~= 'incomplete' then
        stale = true
    else
        stale = at < last
    end
else
    -- Stripe does not promise order: an older event must not undo a
    -- newer one; within one second (created's resolution) the later
    -- step of the subscription's life wins (Checkout's created
    -- "incomplete" and updated "active" often share a second)
    stale = at < last or (at == last and rank < last_rank)
end

-- an end is remembered applied or not: the end of a subscription the
-- workspace did not follow (stale) is the one a late event would undo.
-- Bounded: ends older than the window go at each write, the zset keeps
-- the newest subend_max, and the whole key expires with the window
if ending then
    redis.call('ZADD', skey, now, ARGV[6])
    redis.call('ZREMRANGEBYSCORE', skey, '-inf', now - memory)
    redis.call('ZREMRANGEBYRANK', skey, 0, -subend_max - 1)
    redis.call('EXPIRE', skey, memory)
end

if stale then
    redis.call('SET', ekey, ARGV[4], 'EX', tonumber(ARGV[5]))
    return {2}
end

redis.call('HSET', wkey, 'subscriptionStatus', ARGV[1],
           'subscriptionEventAt', ARGV[3], 'subscriptionEventRank', ARGV[7],
           'subscriptionId', ARGV[6], 'updatedAt', ARGV[4])
if ARGV[2] ~= '' then
    redis.call('HSET', wkey, 'plan', ARGV[2])
end

redis.call('SET', ekey, ARGV[4], 'EX', tonumber(ARGV[5]))

return {3}
