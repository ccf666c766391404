-- Who calls, and may the workspace make one more request: the first step
-- of every Lines API script, so that authentication, the fleet-wide
-- request rate (SPEC 2.7) and the endpoint's work share one round trip.
--
-- ARGV[1] 'k': ARGV[2] is sha256hex of an API key, resolved here;
--         'w': ARGV[2] is the workspace of a verified Clerk token
--         'n': ARGV[2] is the workspace and this request was already
--              counted (the GET's transaction): ARGV[3] is what it left
-- ARGV[3] requests allowed per window, ARGV[4] the window's number,
-- ARGV[5] ms until the window ends
-- ARGV[6] 'gate': stop after this step (the caller already knows its
--         answer is an error, e.g. a malformed id, and only needs to
--         know that the credential is good)
--
-- lg_lr_gate() -> ws, code, remaining
--   code LR_GATE_OK, LR_UNAUTHORIZED (ws nil) or LR_RATE_LIMITED.
local function lg_lr_gate()
    local ws = ARGV[2]
    if ARGV[1] == 'n' then
        return ws, LR_GATE_OK, tonumber(ARGV[3])
    end

    if ARGV[1] == 'k' then
        ws = redis.call('GET', 'lg:apikey:' .. ARGV[2])
        if not ws then
            return nil, LR_UNAUTHORIZED, 0
        end
    end

    local key = 'lg:{ws:' .. ws .. '}:rl:' .. ARGV[4]
    local limit = tonumber(ARGV[3])
    local n = redis.call('INCR', key)
    if n == 1 then
        redis.call('PEXPIRE', key, tonumber(ARGV[5]) + 1000)
    end

    -- a refused call is not counted: a client hammering at the limit
    -- keeps the counter at the limit, and the window's end stays put
    if n > limit then
        redis.call('DECR', key)
        return ws, LR_RATE_LIMITED, 0
    end

    return ws, LR_GATE_OK, limit - n
end
