-- Rolling windows of provisioned lines: 24 hours and 30 days, as the
-- confirm enforces them (pv_reserve.lua, the only writer of the windows,
-- atomically with the purchase) and pv_release.lua reports them. The
-- preview and GET /accounts/limits read the same rule in C
-- (src/ngx_http_linegate_provision_plain.c): it needs no atomicity there.
--
-- lg:{acct:<A>}:prov is a zset with one member per counted line
-- (worker_<id>), score = Unix ms of its confirm. A line counts while its
-- score is strictly greater than now - window: a line confirmed exactly
-- one window ago has left it.
--
-- lg_pv_window(prov, now, window_ms, limit) -> used, free_at
--   free_at: Unix ms at which one more line can be added (when the window
--   is full: when the line that must leave for a slot to free leaves;
--   otherwise when the oldest counted line leaves), 0 when nothing counts
--   or when no slot can ever free (a limit of 0).
--
-- lg_pv_state(akey, prov, now, def_daily, def_monthly) -> plan, customer, w
--   akey: lg:{acct:<A>}, prov: its :prov (both in the script's KEYS[])
--   w = {daily limit, used, free_at, monthly limit, used, free_at}; the
--   limits are the account's daily_limit/monthly_limit, else the defaults.
--   lg_pv_windows() is the same from fields the caller read already;
--   lg_pv_added() is w once the caller added a line at now.

-- the window lengths, ms: from src/ngx_http_linegate_provision.h, which
-- the preview and the limits (src/ngx_http_linegate_provision_plain.c)
-- read too (embed.pl checks the numbers here against it)
local LG_PV_DAY = 86400 * 1000  --#define NGX_HTTP_LINEGATE_PV_DAY
local LG_PV_MONTH = 2592000 * 1000  --#define NGX_HTTP_LINEGATE_PV_MONTH

-- when one more line can be added to a window of used lines
local function lg_pv_free_at(prov, from, window_ms, limit, used)
    if used == 0 then
        return 0
    end

    local o
    if used >= limit then
        if limit <= 0 then
            -- a limit of 0: no slot ever frees
            return 0
        end
        -- line used - limit, oldest first: the limit-th newest, found by
        -- its rank (O(log n); an offset into the range would walk it)
        o = redis.call('ZREVRANGE', prov, limit - 1, limit - 1,
                       'WITHSCORES')
    else
        o = redis.call('ZRANGEBYSCORE', prov, from, '+inf',
                       'WITHSCORES', 'LIMIT', 0, 1)
    end

    return tonumber(o[2]) + window_ms
end

local function lg_pv_from(now, window_ms)
    return '(' .. string.format('%d', now - window_ms)
end

local function lg_pv_window(prov, now, window_ms, limit)
    local from = lg_pv_from(now, window_ms)
    local used = redis.call('ZCOUNT', prov, from, '+inf')

    return used, lg_pv_free_at(prov, from, window_ms, limit, used)
end

-- the account's limit: a number >= 0, rounded down, at most 2^31 - 1, as
-- the preview reads it in C (strtod, isfinite); anything else is the
-- default. Lua's tonumber takes "inf", "nan" and "1e400" (strtod's way):
-- none of them compares >= to a count, and a window they let through
-- would be no limit at all
local LG_PV_LIMIT_MAX = 2147483647

local function lg_pv_limit(v, default)
    local n = tonumber(v)
    if not n or n ~= n or n < 0 or n == math.huge then
        return default
    end
    return math.floor(math.min(n, LG_PV_LIMIT_MAX))
end

-- the account's fields a = {plan, daily_limit, monthly_limit, customer}
local function lg_pv_windows(prov, now, a, def_daily, def_monthly)
    local dl = lg_pv_limit(a[2], def_daily)
    local ml = lg_pv_limit(a[3], def_monthly)

    local du, df = lg_pv_window(prov, now, LG_PV_DAY, dl)
    local mu, mf = lg_pv_window(prov, now, LG_PV_MONTH, ml)

    return a[1], a[4], {dl, du, df, ml, mu, mf}
end

local function lg_pv_state(akey, prov, now, def_daily, def_monthly)
    local a = redis.call('HMGET', akey, 'plan', 'daily_limit',
                         'monthly_limit', 'stripeCustomerId')

    return lg_pv_windows(prov, now, a, def_daily, def_monthly)
end

-- a window's free_at once a line was added at now, from what w said
-- before (used: with the line; free: free_at without it). Full now: the
-- line that frees a slot, looked up by its rank. Not full: the oldest
-- line, which the one added at now does not change unless the window
-- was empty or its oldest scored later than now (another nginx's clock
-- ahead): no call at all
local function lg_pv_added_free_at(prov, now, window_ms, limit, used, free)
    if used >= limit then
        return lg_pv_free_at(prov, lg_pv_from(now, window_ms), window_ms,
                             limit, used)
    end

    if used == 1 or now + window_ms < free then
        return now + window_ms
    end
    return free
end

-- w once a line was added at now (and none that counts removed): each
-- window counts one more, and only a window it filled looks up the line
-- that frees a slot (at most 2 calls instead of the 4 of lg_pv_windows)
local function lg_pv_added(prov, now, w)
    local du, mu = w[2] + 1, w[5] + 1

    return {w[1], du,
            lg_pv_added_free_at(prov, now, LG_PV_DAY, w[1], du, w[3]),
            w[4], mu,
            lg_pv_added_free_at(prov, now, LG_PV_MONTH, w[4], mu, w[6])}
end

-- {code, w[1..6], account, ...}: the reply shape of the provisioning
-- scripts once the account is known
local function lg_pv_reply(code, w, acct, ...)
    local r = {code, w[1], w[2], w[3], w[4], w[5], w[6], acct}
    local extra = {...}
    for i = 1, #extra do
        r[#r + 1] = extra[i]
    end
    return r
end

-- the window that refuses one more line, if any
local function lg_pv_over(w)
    if w[2] >= w[1] then
        return 'daily_limit_reached'
    end
    if w[5] >= w[4] then
        return 'monthly_limit_reached'
    end
    return nil
end
