-- POST /accounts/lines/provision-preview in one round trip: credentials,
-- plan, both windows, inventory and the token write, atomically. The
-- same checks as the benchmark peers' provision_preview.lua; the reply
-- also carries both windows for the RateLimit headers.
--
-- KEYS[1]  lg:sbkey:<key id>
-- KEYS[2]  lg:pv:<the new token>    KEYS[3]  lg:inventory
-- ARGV[1]  sha256hex of the presented secret
-- ARGV[2]  now, Unix ms
-- ARGV[3]  default daily limit     ARGV[4]  default monthly limit
-- ARGV[5]  token lifetime, seconds
-- The account's keys lg:{acct:<A>}, :prov are derived from the account
-- read from KEYS[1]: another slot (issue 10).
--
-- Returns {401}, or {code, w[1..6], account, extra}: 403 (plan), 429
-- with the refused window's error code, 503 (inventory empty), 200 (token
-- stored).
--
-- Writes KEYS[2], the preview as JSON, expiring with the token; it
-- names its account, so that a confirm by another account is told 403.
-- (src/ngx_http_linegate_provision_plain.c writes the same, without a
-- script, for credentials the worker knows.)

--#include pv_auth
--#include pv_state

-- a refusal leaves no token: the plain commands may have written this
-- one ahead of their checks before handing the preview over
local function refuse(...)
    redis.call('DEL', KEYS[2])
    return ...
end

local acct = lg_pv_auth(KEYS[1], ARGV[1])
if not acct then
    return refuse({401})
end

local akey = 'lg:{acct:' .. acct .. '}'
local now = tonumber(ARGV[2])
local plan, _, w = lg_pv_state(akey, now, tonumber(ARGV[3]),
                               tonumber(ARGV[4]))

if plan ~= 'inbound_only' then
    return refuse(lg_pv_reply(403, w, acct))
end

local over = lg_pv_over(w)
if over then
    return refuse(lg_pv_reply(429, w, acct, over))
end

if redis.call('SCARD', KEYS[3]) == 0 then
    return refuse(lg_pv_reply(503, w, acct))
end

local ttl = tonumber(ARGV[5])
redis.call('SET', KEYS[2],
           '{"account":' .. cjson.encode(acct)
           .. ',"key_id":' .. cjson.encode(string.sub(KEYS[1], 10))
           .. ',"created_at":' .. string.format('%d', now)
           .. ',"expires_at":' .. string.format('%d', now + ttl * 1000)
           .. '}',
           'EX', ttl)

return lg_pv_reply(200, w, acct)
