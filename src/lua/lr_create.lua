-- POST /api/line-requests: authenticate, count the request, replay or
-- lock the idempotency key, decide what the line costs and either create
-- it (included: provisioning, and into the set-up stream) or reserve it
-- (add-on: awaiting_payment until its invoice is stored), all in one step.
--
-- KEYS[1], [2], [3] see lr_gate, KEYS[4] lg:{ws:W}:lrvoid:<id>,
-- KEYS[5] lg:{ws:W}:lr:<id>, KEYS[6] lg:{ws:W}:lines,
-- KEYS[7] lg:{ws:W}:live, KEYS[8] lg:{ws:W}:pending,
-- KEYS[9] lg:{ws:W}:idem:<ARGV[20]> (declared
-- also without an idempotency key, lg:{ws:W}:idem:, never touched then:
-- one list of keys whatever the request), KEYS[10] lg:provisioning on one
-- Redis only (ARGV[1] 'w'): on a cluster it is another slot, not
-- declared; an included line's set-up entry is then appended by nginx
-- after this step (LR_OK is the report), covered by the member of
-- lg:{fleet}:lr:setup it wrote before it
-- Derived from KEYS[1] (its slot), named by the workspace's data: the
-- requests of :live and of :lines since :live read it (all of :lines
-- while :live is not built), the one :pending names and the
-- reservation an idempotency key holds, lg:{ws:W}:lr:<rid>; on a cluster
-- the index's are checked first to be all here (include/lr_here.lua),
-- so that one not yet moved is never counted out, dropped or taken
-- over. The owner index lg:line:<id> is not written here: nginx writes
-- it in its own step before this one (a creation this script refuses
-- leaves it naming a workspace without the line, which every reader
-- answers as unknown).
-- KEYS[11] the journal lg:{fleet}:lr:inflight on one Redis only: a
-- reservation's member "<W> <id>" is written here, with it, so that no
-- reservation is ever without one (a worker dying as soon as this step
-- ran leaves it for the reconciliation's sweep). On a cluster it is
-- another slot: nginx writes the member before this step, with the owner
-- index, and removes it once this step answered anything but a
-- reservation.
-- ARGV[1..6] see lr_gate
-- ARGV[7] id, ARGV[8] now (ms), ARGV[9] now (ISO 8601)
-- ARGV[10] channelType, ARGV[11] lineType, ARGV[12] firstName,
-- ARGV[13] lastName, ARGV[14] email, ARGV[15] phone,
-- ARGV[16] forwardCallsTo, ARGV[17] profileImageUrl, ARGV[18] zipcode,
-- ARGV[19] state ("" when not given)
-- ARGV[20] sha256hex of the idempotency key ("" when none), ARGV[21] the
-- body's fingerprint, ARGV[22] seconds an answer is kept under its key
-- ARGV[23] ms after which a reservation without an invoice is abandoned
-- (10 minutes, plus the time its last finalize may take to be answered
-- and stored: linegate_stripe_timeout and the repairs' 8 s)
-- ARGV[24] the 201 body of an included line, kept under the idempotency
-- key ("" without one: nginx answers the body it rendered)
--
-- Returns {code, ws, remaining, ...}:
--   LR_OK (an included line, made: its set-up entry appended here on
--   one Redis, by nginx on a cluster; its 201, ARGV[24], kept under the
--   idempotency key, nginx answers the body it sent),
--   LR_SUBSCRIPTION, LR_FORBIDDEN, LR_PENDING: a business outcome,
--                   then its status and body, kept under the idempotency
--                   key in this same step (a retry replays it, whatever
--                   became of this call's answer)
--   LR_RESERVED     add-on, reserved; then the Stripe customer id. The
--                   key is held ("running", naming the request) while the
--                   reservation waits for its invoice; lr_invoice_store
--                   keeps the answer, lr_release frees it
--   LR_READ_ONLY    then the subscription status
--   LR_NO_CUSTOMER  add-on, but the workspace has no Stripe customer
--   LR_REPLAY       then the stored status and body
--   LR_IDEM_MISMATCH / LR_IDEM_IN_USE / LR_COLLISION (also: the request
--   was released, lr_release, before this script ran)
-- The last five write nothing of their own: the gate counted the call,
-- and an abandoned reservation met on the way (the one the key names,
-- or the pending one) is dropped all the same before READ_ONLY or
-- NO_CUSTOMER is answered.
--#include lr_codes
--#include lr_gate
--#include lr_drop
--#include lr_settle
--#include lr_here

local lines, live, pkey = KEYS[6], KEYS[7], KEYS[8]
local ikey = ARGV[20] ~= '' and KEYS[9] or nil

-- The workspace's live requests (awaiting_payment, provisioning, active)
-- are :live, kept beside :lines by every step that adds to or takes
-- from :lines (this one, lr_drop, lr_settle) and by op_line_transition's
-- move to failed, so that a creation counts what the workspace has, not
-- its failed lines, which :lines keeps for by-user (SPEC 2.8) for ever
-- (docs/performance.md, "a creation's walk of failed lines"). Its
-- member LR_LIVE_BUILT says it is built: Redis deletes an empty zset,
-- and an index absent is then one never built, a workspace written
-- before it, which the first count reads :lines for (live_count), and
-- the first creation that goes ahead after it writes (found, below),
-- once, whether it counted or not. No step adds to an index that is
-- not built: it would be taken for a built one that holds only that
-- request.
-- The marker's score is the newest :lines score the last count that
-- went ahead read (a request's is the ms of its creation; 0 in an index
-- built before it was kept): an nginx from before :live (a rollout's
-- older nodes, a rollback, docs/deploy.md) adds its creations to :lines
-- alone, and a count reads the requests :lines gained since, less
-- LR_LIVE_SKEW for the nodes' clocks, besides :live (live_walk): those
-- :live lacks are counted and written into it with the new request
-- (none is scored later than now and LR_LIVE_SKEW: a score no nginx
-- wrote is not read).
-- Only its late reopen of a canceled request (scored at its creation)
-- is not seen: deploy.md says to delete :live after such a rollout.
local LR_LIVE_BUILT = 'built'
local LR_LIVE_SKEW = 60000

-- :live read once, when first needed (after the gate, so that a call
-- the gate refuses reads nothing of it): its members, the
-- marker left out, and the marker's score (false: not built). One ZRANGE
-- with the scores, bounded as :live is (the workspace's live requests)
local members, synced
local function live_read()
    if members then
        return synced ~= false
    end

    members, synced = {}, false
    local r = redis.call('ZRANGE', live, 0, -1, 'WITHSCORES')
    for i = 1, #r, 2 do
        if r[i] == LR_LIVE_BUILT then
            synced = r[i + 1]
        else
            members[#members + 1] = r[i]
        end
    end
    return synced ~= false
end

-- a built index's walk, read once: ids, what a count checks (the
-- members of :live, then the late ones); late, id -> score of the
-- requests :lines gained since the marker's score that :live lacks
-- (until now, LR_LIVE_SKEW after); top, the newest :lines score read (a
-- string, as Redis wrote it)
local walk
local function live_walk()
    if walk then
        return walk
    end

    walk = {ids = {}, late = {}, top = synced}
    local seen = {}
    for _, m in ipairs(members) do
        walk.ids[#walk.ids + 1] = m
        seen[m] = true
    end

    local r = redis.call('ZRANGEBYSCORE', lines,
                         '(' .. (tonumber(synced) - LR_LIVE_SKEW),
                         tonumber(ARGV[8]) + LR_LIVE_SKEW, 'WITHSCORES')
    for i = 1, #r, 2 do
        if tonumber(r[i + 1]) > tonumber(walk.top) then
            walk.top = r[i + 1]
        end
        if not seen[r[i]] then
            walk.ids[#walk.ids + 1] = r[i]
            walk.late[r[i]] = r[i + 1]
        end
    end
    return walk
end

local ws, code, left, wkey = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

-- on a cluster, once the gate admitted the call (lr_here): :live holds
-- the pending request and any reservation a key holds, which leave it
-- with their hash (lr_drop); the other ones are gone, canceled or
-- failed. Not built: of :lines, which the count then reads. One that
-- may be on another node: the admission given back, nothing else
-- written yet, TRYAGAIN. After the gate, so that a call it refuses
-- (rate limited, a key revoked) or one that only asks it ('gate': a
-- malformed body) walks nothing: before, each of them walked every
-- request the index names (all of :lines while :live is not built),
-- and 429s bounded none of it
if ARGV[1] == 'c'
   and not lg_lr_here(KEYS[1], live_read() and live_walk().ids
                               or redis.call('ZRANGE', lines, 0, -1))
then
    lg_lr_gate_undo()
    return redis.error_reply(LR_TRYAGAIN)
end

local id = ARGV[7]
local now = tonumber(ARGV[8])
local channel = ARGV[10]
local stale = tonumber(ARGV[23])

-- the call timed out and was released (lr_release) before Redis ran it,
-- or the id is taken: both told apart only when either is there (one
-- call on the way of nearly every creation, redis.call's own cost being
-- most of a creation's in Redis); the id's check keeps its place below
local taken = redis.call('EXISTS', KEYS[4], KEYS[5]) > 0
if taken and redis.call('EXISTS', KEYS[4]) == 1 then
    return {LR_COLLISION, ws, left}
end

-- a reservation nobody will finish: its call failed without releasing
-- it, or its nginx died
local function abandoned(rid)
    local p = redis.call('HMGET', lg_lr_key(wkey, rid),
                         'provisioningStatus', 'invoiceId', 'reservedAt')
    return p[1] ~= 'awaiting_payment'
           or (not p[2] and now - tonumber(p[3] or '0') > stale), p
end

if ikey then
    local rec = redis.call('HMGET', ikey, 'state', 'fp', 'status', 'body',
                           'id')
    if rec[1] then
        if rec[2] ~= ARGV[21] then
            return {LR_IDEM_MISMATCH, ws, left}
        end
        if rec[1] == 'done' then
            return {LR_REPLAY, ws, left, rec[3], rec[4]}
        end

        -- running: held while the reservation it names awaits its
        -- invoice; free once that call is known to have failed (its
        -- reservation released, or abandoned without an invoice)
        local gone, p = abandoned(rec[5] or '')
        if not rec[5] or not gone
           or (p[1] and (p[1] ~= 'awaiting_payment' or p[2]))
        then
            return {LR_IDEM_IN_USE, ws, left}
        end
        if p[1] then
            lg_lr_drop(lg_lr_key(wkey, rec[5]), lines, live, pkey, rec[5])
        end
        redis.call('DEL', ikey)
    end
end

-- a business outcome: its answer kept under the key in this same step
local function outcome(c, status, body)
    if ikey then
        redis.call('HSET', ikey, 'state', 'done', 'fp', ARGV[21],
                   'status', status, 'body', body)
        redis.call('EXPIRE', ikey, tonumber(ARGV[22]))
    end
    return {c, ws, left, status, body}
end

local w = redis.call('HMGET', wkey, 'plan', 'subscriptionStatus',
                     'stripeCustomerId')
local plan, sub = w[1], w[2]

if sub == 'past_due' or sub == 'unpaid' then
    return {LR_READ_ONLY, ws, left, sub}
end

if (sub ~= 'active' and sub ~= 'trialing')
   or (plan ~= 'mini' and plan ~= 'starter' and plan ~= 'growth')
then
    return outcome(LR_SUBSCRIPTION, 403,
        '{"success":false,"status":"subscription_required","message":'
        .. '"The workspace needs an active base plan subscription to '
        .. 'request lines","redirect":"/billing"}')
end

-- found: the live requests the count found that :live lacks, {id,
-- score}, written into it with the new request (below), so that a
-- creation refused writes none of it: :live not built, those of :lines
-- (a workspace written before :live walks :lines until its first
-- creation goes ahead, counted or not); built, the late ones of
-- live_walk.
-- top: the newest :lines score the count read, the marker's score then.
-- gone: the pending request dropped after the count
local found, top, gone

-- live lines of the channel: provisioning or active, counted from :live,
-- what the workspace has, never its history. Not built yet: from :lines
-- (every request but canceled ones), its live ones kept in found. A
-- request met that is not live (none should be: a step that ends one
-- takes it out) leaves :live; one canceled or gone leaves :lines too
-- (an index written before canceled requests left it, or a request an
-- operator deleted)
local function live_count()
    local ids, scores = {}, {}
    local built = live_read()
    if built then
        ids, scores, top = live_walk().ids, walk.late, walk.top
    else
        top = '0'
        local r = redis.call('ZRANGE', lines, 0, -1, 'WITHSCORES')
        for i = 1, #r, 2 do
            ids[#ids + 1] = r[i]
            scores[r[i]] = r[i + 1]
            if tonumber(r[i + 1]) > tonumber(top) then
                top = r[i + 1]
            end
        end
    end
    found = {}

    local n = 0
    for _, lid in ipairs(ids) do
        local h = redis.call('HMGET', lg_lr_key(wkey, lid),
                             'provisioningStatus', 'channelType')
        if h[1] == 'provisioning' or h[1] == 'active'
           or h[1] == 'awaiting_payment'
        then
            if scores[lid] then
                found[#found + 1] = {lid, scores[lid]}
            end
            if h[2] == channel and h[1] ~= 'awaiting_payment' then
                n = n + 1
            end
        else
            if built and not scores[lid] then
                redis.call('ZREM', live, lid)
            end
            if not h[1] or h[1] == 'canceled' then
                redis.call('ZREM', lines, lid)
            end
        end
    end
    return n
end

-- SPEC 2.2
local cost
if channel == 'phone' then
    if plan == 'mini' then
        cost = 'forbidden'
    elseif plan == 'starter' then
        cost = live_count() == 0 and 'included' or 'forbidden'
    else
        cost = live_count() < 2 and 'included' or 'addon'
    end
else
    if plan == 'mini' and live_count() == 0 then
        cost = 'included'
    else
        cost = 'addon'
    end
end

if cost == 'forbidden' then
    return outcome(LR_FORBIDDEN, 403,
        '{"success":false,"status":"forbidden_line_type","message":'
        .. '"The workspace\'s plan does not allow another line of this '
        .. 'type"}')
end

-- at most one request awaits payment
local pending = redis.call('GET', pkey)
if pending and abandoned(pending) then
    if redis.call('HGET', lg_lr_key(wkey, pending), 'provisioningStatus')
       == 'awaiting_payment'
    then
        -- the nginx that reserved it never stored an invoice: it died
        -- or lost Redis meanwhile; the workspace must not stay blocked
        lg_lr_drop(lg_lr_key(wkey, pending), lines, live, pkey, pending)
        gone = pending
    else
        redis.call('DEL', pkey)
    end
    pending = nil
end

if pending then
    return outcome(LR_PENDING, 409,
        '{"success":false,"status":"awaiting_payment","message":'
        .. '"Another line request is awaiting payment: pay or cancel it '
        .. 'first","pendingRequestId":"' .. pending .. '"}')
end

if cost == 'addon' and (not w[3] or w[3] == '') then
    return {LR_NO_CUSTOMER, ws, left}
end

local lkey = KEYS[5]
if taken and redis.call('EXISTS', lkey) == 1 then
    return {LR_COLLISION, ws, left}
end

local f = {'firstName', ARGV[12], 'lastName', ARGV[13],
           'channelType', channel, 'lineType', ARGV[11],
           'createdAt', ARGV[9], 'updatedAt', ARGV[9]}
local optional = {'email', 'phone', 'forwardCallsTo', 'profileImageUrl',
                  'zipcode', 'state'}
for i, name in ipairs(optional) do
    if ARGV[13 + i] ~= '' then
        f[#f + 1] = name
        f[#f + 1] = ARGV[13 + i]
    end
end

if cost == 'included' then
    f[#f + 1] = 'provisioningStatus'
    f[#f + 1] = 'provisioning'
    f[#f + 1] = 'paymentStatus'
    f[#f + 1] = 'not_required'
else
    f[#f + 1] = 'provisioningStatus'
    f[#f + 1] = 'awaiting_payment'
    f[#f + 1] = 'paymentStatus'
    f[#f + 1] = 'unpaid'
    f[#f + 1] = 'reservedAt'
    f[#f + 1] = ARGV[8]
    -- the customer it is billed to: a reconciliation run looks for its
    -- invoice there, whatever the workspace names later
    f[#f + 1] = 'customer'
    f[#f + 1] = w[3]
    if ARGV[20] ~= '' then
        -- the key it holds "running": freed with it if its worker dies
        f[#f + 1] = 'idem'
        f[#f + 1] = ARGV[20]
    end
end

if cost == 'addon' and ARGV[1] == 'w' then
    -- first: a ZADD refused (WRONGTYPE, OOM) stops the script before
    -- the reservation is written
    redis.call('ZADD', KEYS[11], ARGV[8], ws .. ' ' .. id)
end

-- :live not built and not counted (an add-on of its channel, SPEC 2.2):
-- built all the same, one walk of :lines, so that a workspace whose
-- creations never count is not walked whole (on a cluster, lg_lr_here()
-- too) at each of them for ever
local built = live_read()
if not built and not found then
    live_count()
end

-- the scores as nginx wrote them: a Lua number would be formatted back
redis.call('HSET', lkey, unpack(f))
redis.call('ZADD', lines, ARGV[8], id)

-- :live's writes in one ZADD (each a command of Redis's time at every
-- creation): the request, and when the count read :lines (all of it, or
-- what it gained since) the marker and the live requests it found, so
-- that :live is built or brought up to date with the request. found is
-- bounded as :live is; the ZADD is cut every LR_LIVE_BATCH members all
-- the same, unpack's stack being finite
local LR_LIVE_BATCH = 512
local z = {ARGV[8], id}
if found then
    if tonumber(ARGV[8]) > tonumber(top) then
        top = ARGV[8]
    end
    z[#z + 1] = top
    z[#z + 1] = LR_LIVE_BUILT
    for _, e in ipairs(found) do
        if e[1] ~= gone then
            z[#z + 1] = e[2]
            z[#z + 1] = e[1]
            if #z >= 2 * LR_LIVE_BATCH then
                redis.call('ZADD', live, unpack(z))
                z = {}
            end
        end
    end
end
if (built or found) and #z > 0 then
    -- (neither: never, a creation that goes ahead has counted above; an
    -- index not built is never added to)
    redis.call('ZADD', live, unpack(z))
end

if cost == 'included' then
    lg_lr_provision(ARGV[1] == 'w' and KEYS[10] or nil, ws, id, channel,
                    ARGV[11], ARGV[9])

    -- nginx answers the body it rendered; a retry replays the kept one
    if ikey then
        outcome(LR_OK, 201, ARGV[24])
    end
    return {LR_OK, ws, left}
end

redis.call('SET', pkey, id)

if ikey then
    redis.call('HSET', ikey, 'state', 'running', 'fp', ARGV[21], 'id', id)
    redis.call('EXPIRE', ikey, tonumber(ARGV[22]))
end

return {LR_RESERVED, ws, left, w[3]}
