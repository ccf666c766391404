-- Operator API: add E.164 numbers to the inventory.
-- KEYS[1] lg:{fleet}:inventory
-- ARGV[1] the numbers, comma-separated (validated by the caller)
-- Returns {1, added, total}.
local added = 0
local batch = {}

for n in string.gmatch(ARGV[1], "[^,]+") do
    batch[#batch + 1] = n
    if #batch == 500 then
        added = added + redis.call("SADD", KEYS[1], unpack(batch))
        batch = {}
    end
end

if #batch > 0 then
    added = added + redis.call("SADD", KEYS[1], unpack(batch))
end

return {1, added, redis.call("SCARD", KEYS[1])}
