-- POST /accounts/lines/provision-confirm, TOKEN (the token's own slot):
-- the preview token read and, unless it is another account's, consumed
-- (whatever happens next it cannot be used again: SPEC 3.4). Parallel
-- confirms of one token: one of them finds it. The account's step
-- (pv_reserve.lua) follows, told what this one answered.
--
-- KEYS[1]  lg:pv:<token>, JSON {"account","key_id","created_at",
--          "expires_at"} written by the preview (src/ngx_http_linegate_
--          provision_plain.c)
-- ARGV[1]  the account of the credentials (AUTH), <A>
-- ARGV[2]  now, Unix ms
--
-- Returns {code}:
--   200   the token is the account's and valid: consumed
--   403   the token names another account: kept for its owner
--   410   no such token (used, expired by Redis, unknown), or malformed,
--         or past its expires_at: consumed if it was there

local pv = redis.call('GET', KEYS[1])

if not pv then
    return {410}
end

local ok, p = pcall(cjson.decode, pv)

-- another account's token is refused and kept for its owner
if ok and type(p) == 'table' and type(p.account) == 'string'
   and p.account ~= ARGV[1]
then
    return {403}
end

redis.call('DEL', KEYS[1])

if not ok or type(p) ~= 'table' or p.account ~= ARGV[1]
   or tonumber(p.expires_at) == nil
   or tonumber(p.expires_at) <= tonumber(ARGV[2])
then
    return {410}
end

return {200}
