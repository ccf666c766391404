-- Operator API: add E.164 numbers to the inventory.
-- KEYS[1] lg:{fleet}:inventory, KEYS[2] lg:{fleet}:held (the numbers
-- handed out: claimed by a purchase, on a line, or held by a reconcile
-- entry; pv_claim adds, the steps that give a number back remove)
-- ARGV[1] the numbers, comma-separated (validated by the caller)
-- Returns {1, added, total, held}: a number handed out is left out (a
-- list posted again must not put it back for a second purchase).
local added, held = 0, 0
local batch = {}

local function flush()
    if #batch > 0 then
        added = added + redis.call("SADD", KEYS[1], unpack(batch))
        batch = {}
    end
end

for n in string.gmatch(ARGV[1], "[^,]+") do
    if redis.call("SISMEMBER", KEYS[2], n) == 1 then
        held = held + 1
    else
        batch[#batch + 1] = n
        if #batch == 500 then
            flush()
        end
    end
end

flush()

return {1, added, redis.call("SCARD", KEYS[1]), held}
