-- GET /api/lines/by-user: every line request of the workspace except
-- canceled ones, oldest first, each with today's usage: the index of live
-- requests, one HGETALL each.
-- KEYS[1], [2], [3] and ARGV[1..6] see lr_gate, KEYS[4] lg:{ws:W}:lines
-- ARGV[7] UTC date (YYYY-MM-DD; unused: nginx compares it with the usage
-- day in the hash)
-- The requests it lists are named by the index (lg:{ws:W}:lr:<id>,
-- derived from KEYS[1]: the workspace's slot); on a cluster they are
-- checked first to be all here (include/lr_here.lua), so that one not
-- yet moved is never listed as gone nor dropped from the index.
-- Returns {LR_OK, ws, remaining, line...} (see lr_line) or the gate's.
--#include lr_codes
--#include lr_gate
--#include lr_line
--#include lr_here

local ws, code, left, wkey = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

-- on a cluster, once the gate admitted the call (lr_here; one that may
-- be on another node: the admission given back, TRYAGAIN), so that a
-- call the gate refuses (a key revoked, rate limited) walks nothing:
-- before, each one walked every request of :lines
local ids = ARGV[1] == 'c' and redis.call('ZRANGE', KEYS[4], 0, -1)
if ids and not lg_lr_here(KEYS[1], ids) then
    lg_lr_gate_undo()
    return redis.error_reply(LR_TRYAGAIN)
end

local out = {LR_OK, ws, left}

-- the index holds the requests that are not canceled (lr_settle takes
-- them out); one canceled before that rule, or gone, leaves it here
for _, id in ipairs(ids or redis.call('ZRANGE', KEYS[4], 0, -1)) do
    local line = lg_lr_line(lg_lr_key(wkey, id), id)
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
        redis.call('ZREM', KEYS[4], id)
    end
end

return out
