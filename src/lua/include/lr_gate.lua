-- Who calls, and may the workspace make one more request: the first step
-- of every Lines API script, so that authentication, the fleet-wide
-- request rate (SPEC 2.7) and the endpoint's work share one round trip.
-- The rate is GCRA, the one implementation linegate_limit uses too
-- (include/rl_gcra.lua), on the workspace's key lg:{ws:W}:gcra.
--
-- KEYS[1] 'k': lg:apikey:<ARGV[2]>, else lg:{ws:<ARGV[2]>}
-- ARGV[1] 'k': ARGV[2] is sha256hex of an API key, resolved here;
--         'w': ARGV[2] is the workspace of a verified Clerk token
-- ARGV[3] the emission interval T (microseconds per request: the
--         window / linegate_rate), ARGV[4] the tolerance tau = (N - 1) T,
--         so that a full window's worth may come at once
-- ARGV[5] unused
-- ARGV[6] 'gate': stop after this step (the caller already knows its
--         answer is an error, e.g. a malformed id, and only needs to
--         know that the credential is good)
--
-- lg_lr_gate() -> ws, code, {remaining, reset_ms, retry_after_ms}, wkey
--   code LR_GATE_OK, LR_UNAUTHORIZED (ws nil) or LR_RATE_LIMITED; a
--   refused request writes nothing (GCRA: nothing to take back). wkey:
--   lg:{ws:W}, KEYS[1] itself, or with an API key derived from the
--   workspace the lookup names (another slot than KEYS[1]: issue 10);
--   the script's workspace keys all derive from it.

if redis.replicate_commands then
    redis.replicate_commands()
end

--#include rl_gcra

local function lg_lr_gate()
    local ws, wkey = ARGV[2], KEYS[1]

    if ARGV[1] == 'k' then
        ws = redis.call('GET', KEYS[1])
        if not ws then
            return nil, LR_UNAUTHORIZED, {0, 0, 0}
        end
        wkey = 'lg:{ws:' .. ws .. '}'
    end

    local admitted, left, reset_ms, retry_ms =
        lg_rl_gcra(wkey .. ':gcra', tonumber(ARGV[3]), tonumber(ARGV[4]), 1)

    if admitted < 1 then
        return ws, LR_RATE_LIMITED, {0, reset_ms, retry_ms}, wkey
    end

    return ws, LR_GATE_OK, {left, reset_ms, 0}, wkey
end
