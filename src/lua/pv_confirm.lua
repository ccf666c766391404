-- POST /accounts/lines/provision-confirm, step 1, atomically: consume the
-- preview token (whatever happens next it cannot be used again), check
-- the plan, re-check both windows, take a number from the inventory and
-- reserve the limit slot. No burst of parallel confirms can exceed a
-- limit or share a number: each one runs this script alone.
--
-- KEYS[1]  lg:sbkey:<key id>
-- KEYS[2]  lg:pv:<token> (lg:pv:- if malformed)
-- KEYS[3]  lg:{fleet}:inventory             KEYS[4]  lg:{fleet}:pv:inflight
-- ARGV[1]  sha256hex of the presented secret
-- ARGV[2]  now, Unix ms
-- ARGV[3]  default daily limit     ARGV[4]  default monthly limit
-- ARGV[5]  the new worker id, worker_<24 hex>
-- ARGV[6]  now, ISO 8601
-- The account's keys lg:{acct:<A>}, :prov, :resv:<worker> are derived
-- from the account read from KEYS[1]: another slot (issue 10).
--
-- Returns {401}, or {code, w[1..6], account, extra}:
--   410                  token expired, used or unknown
--   403, "token"         the token belongs to another account (kept)
--   403, "plan"          the account is not on inbound_only
--   429, error code      a window is full
--   402                  the account has no Stripe customer
--   503                  inventory empty
--   200, account, customer, number    reserved (w counts the new slot)
--
-- The reservation lg:{acct:<A>}:resv:<worker> {phone_number, createdAt}
-- holds the number until the line is recorded (pv_record) or released
-- (pv_release); an old one is a confirm that never finished, found
-- through lg:{fleet}:pv:inflight.

--#include pv_auth
--#include pv_state

local acct = lg_pv_auth(KEYS[1], ARGV[1])
if not acct then
    return {401}
end

local akey = 'lg:{acct:' .. acct .. '}'
local now = tonumber(ARGV[2])
local dd, dm = tonumber(ARGV[3]), tonumber(ARGV[4])
local plan, customer, w = lg_pv_state(akey, now, dd, dm)

local pkey = KEYS[2]
local pv = redis.call('GET', pkey)

if not pv then
    return lg_pv_reply(410, w, acct)
end

local ok, p = pcall(cjson.decode, pv)

-- another account's token is refused and kept for its owner
if ok and type(p) == 'table' and type(p.account) == 'string'
   and p.account ~= acct
then
    return lg_pv_reply(403, w, acct, 'token')
end

redis.call('DEL', pkey)

if not ok or type(p) ~= 'table' or p.account ~= acct
   or tonumber(p.expires_at) == nil
   or tonumber(p.expires_at) <= now
then
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

local number = redis.call('SPOP', KEYS[3])
if not number then
    return lg_pv_reply(503, w, acct)
end

local prov = akey .. ':prov'
redis.call('ZADD', prov, now, ARGV[5])
redis.call('HSET', akey .. ':resv:' .. ARGV[5], 'phone_number', number,
           'createdAt', ARGV[6])
-- in flight until pv_record or pv_release: one left past
-- linegate_reconcile_lost_after is a worker's that died (the reaper,
-- op_reconcile_sweep, queues it)
redis.call('ZADD', KEYS[4], now, acct .. ' ' .. ARGV[5])

-- lines older than the longest window never count again
redis.call('ZREMRANGEBYSCORE', prov, '-inf',
           string.format('%d', now - LG_PV_MONTH))

local _, _, w2 = lg_pv_state(akey, now, dd, dm)

return lg_pv_reply(200, w2, acct, customer, number)
