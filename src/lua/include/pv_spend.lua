-- A preview token read and, unless it is another account's, consumed
-- (whatever happens next it cannot be used again: SPEC 3.4). Parallel
-- confirms of one token: one of them finds it.
--
-- lg_pv_spend(key, acct, now) -> 200, 403 or 410
--   key: lg:pv:{<tag>}:<digest>, JSON {"account","key_id","created_at",
--   "expires_at"} written by the preview (src/ngx_http_linegate_
--   provision_plain.c); acct: the account of the credentials; now: ms
--   200  the token is the account's and valid: consumed
--   403  the token names another account: kept for its owner
--   410  no such token (used, expired by Redis, unknown), or malformed,
--        or past its expires_at: consumed if it was there

local function lg_pv_spend(key, acct, now)
    local pv = redis.call('GET', key)

    if not pv then
        return 410
    end

    local ok, p = pcall(cjson.decode, pv)

    -- another account's token is refused and kept for its owner
    if ok and type(p) == 'table' and type(p.account) == 'string'
       and p.account ~= acct
    then
        return 403
    end

    redis.call('DEL', key)

    if not ok or type(p) ~= 'table' or p.account ~= acct
       or tonumber(p.expires_at) == nil
       or tonumber(p.expires_at) <= now
    then
        return 410
    end

    return 200
end
