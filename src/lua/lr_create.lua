-- POST /api/line-requests: authenticate, count the request, replay or
-- lock the idempotency key, decide what the line costs and either create
-- it (included: provisioning, and into the set-up stream) or reserve it
-- (add-on: awaiting_payment until its invoice is stored), all in one step.
--
-- ARGV[1..6] see lr_gate
-- ARGV[7] id, ARGV[8] now (ms), ARGV[9] now (ISO 8601)
-- ARGV[10] channelType, ARGV[11] lineType, ARGV[12] firstName,
-- ARGV[13] lastName, ARGV[14] email, ARGV[15] phone,
-- ARGV[16] forwardCallsTo, ARGV[17] profileImageUrl, ARGV[18] zipcode,
-- ARGV[19] state ("" when not given)
-- ARGV[20] sha256hex of the idempotency key ("" when none), ARGV[21] the
-- body's fingerprint, ARGV[22] seconds the lock of a call in flight lasts
-- ARGV[23] ms after which a reservation without an invoice is abandoned
--
-- Returns {code, ws, remaining, ...}:
--   LR_OK           included, created
--   LR_RESERVED     add-on, reserved; then the Stripe customer id
--   LR_SUBSCRIPTION / LR_FORBIDDEN
--   LR_PENDING      then the id of the request awaiting payment
--   LR_READ_ONLY    then the subscription status
--   LR_NO_CUSTOMER  add-on, but the workspace has no Stripe customer
--   LR_REPLAY       then the stored status and body
--   LR_IDEM_MISMATCH / LR_IDEM_IN_USE / LR_COLLISION
-- The first five take the idempotency lock (state "running"); the module
-- stores the answer (lr_idem_done, lr_invoice_store) or frees it
-- (lr_release). The others write nothing.
--#include lr_codes
--#include lr_gate
--#include lr_drop
--#include lr_settle

local ws, code, left = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

local wkey = 'lg:{ws:' .. ws .. '}'
local id = ARGV[7]
local now = tonumber(ARGV[8])
local channel = ARGV[10]
local ikey = ARGV[20] ~= '' and (wkey .. ':idem:' .. ARGV[20]) or nil

if ikey then
    local rec = redis.call('HMGET', ikey, 'state', 'fp', 'status', 'body')
    if rec[1] then
        if rec[2] ~= ARGV[21] then
            return {LR_IDEM_MISMATCH, ws, left}
        end
        if rec[1] ~= 'done' then
            return {LR_IDEM_IN_USE, ws, left}
        end
        return {LR_REPLAY, ws, left, rec[3], rec[4]}
    end
end

local function outcome(c, ...)
    if ikey then
        redis.call('HSET', ikey, 'state', 'running', 'fp', ARGV[21])
        redis.call('EXPIRE', ikey, tonumber(ARGV[22]))
    end
    return {c, ws, left, ...}
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
    return outcome(LR_SUBSCRIPTION)
end

-- live lines of the channel: provisioning or active. The index holds the
-- requests that are not canceled (lr_settle takes them out), so this walks
-- what the workspace has, never its history.
local function live()
    local n = 0
    for _, lid in ipairs(redis.call('ZRANGE', wkey .. ':lines', 0, -1)) do
        local h = redis.call('HMGET', wkey .. ':lr:' .. lid,
                             'provisioningStatus', 'channelType')
        if h[2] == channel
           and (h[1] == 'provisioning' or h[1] == 'active')
        then
            n = n + 1
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
        cost = live() == 0 and 'included' or 'forbidden'
    else
        cost = live() < 2 and 'included' or 'addon'
    end
else
    if plan == 'mini' and live() == 0 then
        cost = 'included'
    else
        cost = 'addon'
    end
end

if cost == 'forbidden' then
    return outcome(LR_FORBIDDEN)
end

-- at most one request awaits payment
local pending = redis.call('GET', wkey .. ':pending')
if pending then
    local p = redis.call('HMGET', wkey .. ':lr:' .. pending,
                         'provisioningStatus', 'invoiceId', 'reservedAt')
    if p[1] ~= 'awaiting_payment' then
        redis.call('DEL', wkey .. ':pending')
        pending = nil
    elseif not p[2]
           and now - tonumber(p[3] or '0') > tonumber(ARGV[23])
    then
        -- the nginx that reserved it never stored an invoice: it died
        -- or lost Redis meanwhile; the workspace must not stay blocked
        lg_lr_drop(ws, pending)
        pending = nil
    end
end

if pending then
    return outcome(LR_PENDING, pending)
end

if cost == 'addon' and (not w[3] or w[3] == '') then
    return {LR_NO_CUSTOMER, ws, left}
end

local lkey = wkey .. ':lr:' .. id
if redis.call('EXISTS', lkey) == 1 then
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
end

redis.call('HSET', lkey, unpack(f))
redis.call('ZADD', wkey .. ':lines', now, id)
redis.call('SET', 'lg:line:' .. id, ws)

if cost == 'included' then
    lg_lr_provision(ws, id, channel, ARGV[11], ARGV[9])
    return outcome(LR_OK)
end

redis.call('SET', wkey .. ':pending', id)

return outcome(LR_RESERVED, w[3])
