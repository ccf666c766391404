-- GET /api/lines/by-user: every line request of the workspace except
-- canceled ones, oldest first, each with today's usage: the index of live
-- requests, one HGETALL each.
-- KEYS[1] and ARGV[1..6] see lr_gate (its workspace keys derive from
-- the gate's wkey), ARGV[7] UTC date (YYYY-MM-DD;
-- unused: nginx compares it with the usage day in the hash)
-- Returns {LR_OK, ws, remaining, line...} (see lr_line) or the gate's.
--#include lr_codes
--#include lr_gate
--#include lr_line

local ws, code, left, wkey = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

local out = {LR_OK, ws, left}

-- the index holds the requests that are not canceled (lr_settle takes
-- them out); one canceled before that rule, or gone, leaves it here
for _, id in ipairs(redis.call('ZRANGE', wkey .. ':lines', 0, -1)) do
    local line = lg_lr_line(wkey, id)
    local st
    if line then
        for i = 1, #line - 1, 2 do
            if line[i] == 'provisioningStatus' then
                st = line[i + 1]
                break
            end
        end
    end
    if st and st ~= 'canceled' then
        out[#out + 1] = line
    else
        redis.call('ZREM', wkey .. ':lines', id)
    end
end

return out
