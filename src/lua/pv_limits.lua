-- GET /accounts/limits: credentials, plan and both windows, read only.
--
-- KEYS[1]  lg:sbkey:<key id>
-- ARGV[1]  sha256hex of the presented secret
-- ARGV[2]  now, Unix ms
-- ARGV[3]  default daily limit     ARGV[4]  default monthly limit
-- The account's keys lg:{acct:<A>}, :prov are derived from the account
-- read from KEYS[1]: another slot (issue 10).
--
-- Returns {401}, or {403 | 200, w[1..6], account}.

--#include pv_auth
--#include pv_state

local acct = lg_pv_auth(KEYS[1], ARGV[1])
if not acct then
    return {401}
end

local plan, _, w = lg_pv_state('lg:{acct:' .. acct .. '}', tonumber(ARGV[2]),
                               tonumber(ARGV[3]), tonumber(ARGV[4]))

if plan ~= 'inbound_only' then
    return lg_pv_reply(403, w, acct)
end

return lg_pv_reply(200, w, acct)
