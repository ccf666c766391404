-- Who calls, and may the workspace make one more request: the first step
-- of every Lines API script, so that the credential's check, the
-- fleet-wide request rate (SPEC 2.7) and the endpoint's work share one
-- round trip on the workspace's slot. The rate is GCRA, the one
-- implementation linegate_limit uses too (include/rl_gcra.lua), on the
-- workspace's key lg:{ws:W}:gcra.
--
-- The workspace is always known here (issue 10: one slot a script): a
-- Clerk token's, a cached API key's, or the one nginx read from the key's
-- lookup lg:apikey:<digest> in its own step before this script (an
-- unknown key is answered 401 there, and this script does not run).
--
-- KEYS[1] lg:{ws:<ARGV[2]>}, KEYS[2] its :keys, KEYS[3] its :gcra (the
--         first three keys of every script that includes this one)
-- ARGV[1] 'w' (the workspace is known), 'c' the same on a Redis Cluster
--         (include/lr_here.lua: a walk of data-named keys checks, once
--         the gate admitted the call, that they are all on this node)
-- ARGV[2] the workspace
-- ARGV[3] the emission interval T (microseconds per request: the
--         window / linegate_rate), ARGV[4] the tolerance tau = (N - 1) T,
--         so that a full window's worth may come at once
-- ARGV[5] an API key nginx resolved through its lookup: its sha256hex,
--         which must still be an entry of lg:{ws:W}:keys (a key revoked
--         loses its entry first, its lookup after: refused in between;
--         a lookup whose entry was never written never authenticates);
--         "" for a Clerk token or a key a worker's cache holds
-- ARGV[6] 'gate': stop after this step (the caller already knows its
--         answer is an error, e.g. a malformed id, and only needs to
--         know that the credential is good)
--
-- lg_lr_gate() -> ws, code, {remaining, reset_ms, retry_after_ms}, wkey
--   code LR_GATE_OK, LR_UNAUTHORIZED (ws nil) or LR_RATE_LIMITED; a
--   refused request writes nothing (GCRA: nothing to take back). wkey:
--   KEYS[1] (the workspace's hash).
-- lg_lr_gate_undo(): the admission of an LR_GATE_OK given back (as
--   rl_refund.lua gives one back), for a step that then answers TRYAGAIN
--   having written nothing else: nginx sends it again, counted then.

if redis.replicate_commands then
    redis.replicate_commands()
end

--#include rl_gcra

local function lg_lr_gate()
    local ws, wkey = ARGV[2], KEYS[1]

    if ARGV[5] ~= '' then
        local listed = false
        -- at most NGX_HTTP_LINEGATE_WS_KEYS_MAX (100, op_key_create)
        for _, d in ipairs(redis.call('HVALS', KEYS[2])) do
            if d == ARGV[5] then
                listed = true
                break
            end
        end
        if not listed then
            return nil, LR_UNAUTHORIZED, {0, 0, 0}
        end
    end

    local admitted, left, reset_ms, retry_ms =
        lg_rl_gcra(KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]), 1)

    if admitted < 1 then
        return ws, LR_RATE_LIMITED, {0, reset_ms, retry_ms}, wkey
    end

    return ws, LR_GATE_OK, {left, reset_ms, 0}, wkey
end

-- rl_refund.lua's arithmetic: the TAT less one emission interval, the key
-- gone when that is now or before (idle). The gate's own SET is there
-- (a script's keys do not expire while it runs); Redis TIME, as the gate
local function lg_lr_gate_undo()
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    local tat = (tonumber(redis.call('GET', KEYS[3]) or '') or 0)
                - tonumber(ARGV[3])

    if tat <= now then
        redis.call('DEL', KEYS[3])
        return
    end

    redis.call('SET', KEYS[3], string.format('%d', tat),
               'PX', math.ceil((tat - now) / 1000) + 1)
end
