-- GCRA, one decision for one key: the one implementation of the
-- algorithm, pasted (--#include rl_gcra) into every script that limits a
-- rate (rl_gcra.lua for linegate_limit; a caller that passes no clock
-- must have called redis.replicate_commands() before its first write when
-- Redis < 5).
--
-- key  the theoretical arrival time (TAT), microseconds
-- T    the emission interval, microseconds per request
-- tau  the tolerance, burst * T
-- want how many requests to admit at most (1, or a worker's lease: see
--      linegate_limit_zone lease=); as many as the key allows now, up
--      to want, are admitted together, 0 when not even one is
-- now  the caller's clock, microseconds (linegate_limit: the deciding
--      worker's, docs/gateway.md says why and what skew costs); nil:
--      Redis TIME (the Lines API's scripts)
--
-- lg_rl_gcra(key, T, tau, want, now) -> admitted (0 .. want), remaining,
-- reset_ms, retry_after_ms: remaining is how many more would pass now,
-- reset_ms when the key is back to its full burst, retry_after_ms when a
-- rejected request would pass (0 when admitted). The state is one string
-- key with its expiry (when it is back to full). A key is most often
-- idle (no key, or its TAT not after now): then the decision is one
-- command, the SET that admits and returns what it replaced (SET ... GET,
-- Redis >= 6.2; before, a GET first). A busy key takes a second SET: the
-- TAT from the one it replaced, or, for a rejection, that one put back
-- as it was (a rejection leaves the state unchanged).
local function lg_rl_gcra(key, T, tau, want, now)
    if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end

    want = want or 1

    -- idle: the key starts from now, with its whole burst
    local full = math.floor(tau / T) + 1
    local n = math.min(want, full)
    local reset = math.ceil(n * T / 1000)
    local written = true

    -- '%d': the TAT is a whole number of microseconds (T and now are
    -- integers), below 2^53; '%.0f' formats it the slow way (libc's
    -- floating-point printer: ~1 us of the script's time in Redis)
    local old = redis.pcall('SET', key, string.format('%d', now + n * T),
                            'PX', reset + 1, 'GET')

    if type(old) == 'table' then
        -- Redis < 6.2 has no SET ... GET (nothing was written): read first
        old = redis.call('GET', key)
        written = false
    end

    local tat = tonumber(old or '')

    if not tat or tat <= now then
        if not written then
            redis.call('SET', key, string.format('%d', now + n * T),
                       'PX', reset + 1)
        end

        return n, full - n, reset, 0
    end

    -- busy: one request passes while tat - tau <= now; n while
    -- tat + (n - 1) T - tau <= now
    local can = math.floor((now - tat + tau) / T) + 1

    if can < 1 then
        if written then
            redis.call('SET', key, old,
                       'PX', math.ceil((tat - now) / 1000) + 1)
        end

        return 0, 0, math.ceil((tat - now) / 1000),
               math.ceil((tat - tau - now) / 1000)
    end

    n = math.min(want, can)
    local new_tat = tat + n * T

    redis.call('SET', key, string.format('%d', new_tat),
               'PX', math.ceil((new_tat - now) / 1000) + 1)

    return n, can - n, math.ceil((new_tat - now) / 1000), 0
end
