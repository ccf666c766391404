-- GET /api/lines/by-user's plain reads (both of its ways: lr_list.lua
-- is its gate alone): the requests they found canceled or gone leave
-- the index, each only if it is still so now. The reads and this step
-- are not one atomic step: a request read canceled (its invoice
-- uncollectible) may have been paid since, and reopened (lr_settle's
-- ZADD): a ZREM of what was read would drop a paid line from the index
-- for good.
-- KEYS[1] lg:{ws:W}:lines, KEYS[2..n+1] the requests' hashes
--         (lg:{ws:W}:lr:<id>), ARGV[1..n] their ids, in the same order
-- Returns how many left the index.
local dropped = 0

for i, id in ipairs(ARGV) do
    local st = redis.call('HGET', KEYS[i + 1], 'provisioningStatus')
    if not st or st == 'canceled' then
        dropped = dropped + redis.call('ZREM', KEYS[1], id)
    end
end

return dropped
