-- GET /api/lines/by-user: every line request of the workspace except
-- canceled ones, oldest first, each with today's usage.
-- ARGV[1..6] see lr_gate, ARGV[7] UTC date (YYYY-MM-DD;
-- unused: nginx compares it with the usage day in the hash)
-- Returns {LR_OK, ws, remaining, line...} (see lr_line) or the gate's.
--#include lr_codes
--#include lr_gate
--#include lr_line

local ws, code, left = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

local wkey = 'lg:{ws:' .. ws .. '}'
local out = {LR_OK, ws, left}

for _, id in ipairs(redis.call('ZRANGE', wkey .. ':lines', 0, -1)) do
    local st = redis.call('HGET', wkey .. ':lr:' .. id, 'provisioningStatus')
    if st and st ~= 'canceled' then
        out[#out + 1] = lg_lr_line(wkey, id)
    end
end

return out
