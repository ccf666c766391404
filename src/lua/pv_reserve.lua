-- POST /accounts/lines/provision-confirm, RESERVE (the account's slot),
-- atomically: spend the preview token when it is in the account's slot
-- (KEYS[6]: every token the account's previews gave), else take TOKEN's
-- answer (pv_token.lua, the token's own slot, ran before); check
-- the key id and the plan, re-check both windows and reserve the limit
-- slot. No burst of parallel confirms can exceed a limit: each one runs
-- this script alone. The number is taken next, in the fleet's slot
-- (pv_claim.lua); the credentials were checked before (the worker's
-- cache, or pv_account.lua).
--
-- KEYS[1]  lg:{acct:<A>}            KEYS[2]  lg:{acct:<A>}:prov
-- KEYS[3]  lg:{acct:<A>}:resv:<worker>
-- KEYS[4]  lg:{acct:<A>}:line:<worker>
-- KEYS[5]  lg:{acct:<A>}:reconcile:w:<worker> (the outbox)
-- (a purchase's five keys, ngx_http_linegate_key_purchase(): every key
-- the step touches is named, so that a cluster checks them all first)
-- KEYS[6]  lg:{fleet}:pv:inflight, when ARGV[9] names the intent (one
--          Redis: this step writes it; a cluster's nginx wrote it before)
-- KEYS[6] or KEYS[7]  lg:pv:{<tag>}:<digest>, the token to spend first,
--          when its tag is the account's slot (then ARGV[8] is '')
-- ARGV[1]  the account id, <A>     ARGV[2]  now, Unix ms
-- ARGV[3]  default daily limit     ARGV[4]  default monthly limit
-- ARGV[5]  the new worker id, worker_<24 hex>
-- ARGV[6]  now, ISO 8601
-- ARGV[7]  the presented key id
-- ARGV[8]  TOKEN's refusal: '' (the token was good, and is consumed),
--          '410' or '403' (then nothing is reserved: the account's
--          windows are read for the answer's headers)
-- ARGV[9]  the purchase's intent "<A> <worker> -", written to KEYS[6]
--          with the reservation ('' or none: not here)
--
-- Returns {401} when the account names another key id (its key_id, when
-- it has one: a credentials rotation writes the new one there first,
-- and the previous lg:sbkey:<key id> may still name the account until
-- its deletion is done); nothing is written, the token not spent. Otherwise
-- {code, w[1..6], account, extra}:
--   410                  TOKEN's 410: the token expired, used or unknown
--   403, "token"         TOKEN's 403: the token names another account
--   403, "plan"          the account is not on inbound_only
--   429, error code      a window is full
--   402                  the account has no Stripe customer
--   200, customer        reserved (w counts the new slot)
--
-- The reservation lg:{acct:<A>}:resv:<worker> {createdAt, customer} holds
-- the slot until the line is recorded (pv_record) or released
-- (pv_release); its customer is the one charged, for the sweep. It is
-- never without the purchase's intent (then its claim) in the claims
-- journal, by which the sweep finds a confirm that died: on one Redis
-- written here, in the same step; on a cluster (the journal in another
-- slot) by nginx before this step.

--#include pv_state
--#include pv_spend

local akey = KEYS[1]
local acct = ARGV[1]
local refused = ARGV[8] or ''
local intent = ARGV[9] or ''
local tkey = KEYS[intent ~= '' and 7 or 6]

-- the key id and the fields lg_pv_windows() reads, in one call
local a = redis.call('HMGET', akey, 'key_id', 'plan', 'daily_limit',
                     'monthly_limit', 'stripeCustomerId')
if a[1] and a[1] ~= ARGV[7] then
    -- a rotation's previous key id: refused before the token is spent (a
    -- 401 never consumes one; TOKEN spends only another slot's, never
    -- the account's own)
    return {401}
end

if tkey then
    local code = lg_pv_spend(tkey, acct, tonumber(ARGV[2]))

    if code ~= 200 then
        refused = tostring(code)
    end
end

local now = tonumber(ARGV[2])
local dd, dm = tonumber(ARGV[3]), tonumber(ARGV[4])
local plan, customer, w = lg_pv_windows(KEYS[2], now,
                                        {a[2], a[3], a[4], a[5]}, dd, dm)

if refused == '403' then
    return lg_pv_reply(403, w, acct, 'token')
end

if refused ~= '' then
    return lg_pv_reply(410, w, acct)
end

if plan ~= 'inbound_only' then
    return lg_pv_reply(403, w, acct, 'plan')
end

local over = lg_pv_over(w)
if over then
    return lg_pv_reply(429, w, acct, over)
end

if not customer or customer == '' then
    return lg_pv_reply(402, w, acct)
end

local prov = KEYS[2]
redis.call('ZADD', prov, now, ARGV[5])
-- the customer charged: the sweep looks there, whatever the account
-- says by then (pv_inspect.lua)
redis.call('HSET', KEYS[3], 'createdAt', ARGV[6], 'customer', customer)

if intent ~= '' then
    redis.call('ZADD', KEYS[6], now, intent)
end

-- lines older than the longest window never count again
redis.call('ZREMRANGEBYSCORE', prov, '-inf',
           string.format('%d', now - LG_PV_MONTH))

return lg_pv_reply(200, lg_pv_added(prov, now, w), acct, customer)
