-- Operator API: a page of the inventory, so that listing it is bounded
-- work however large it grows (SORT of the whole set blocked Redis for
-- as long as the set took to sort, and answered all of it at once).
-- KEYS[1] lg:{fleet}:inventory
-- ARGV[1] the cursor ("0": the first page), ARGV[2] the page's size, a
-- hint to SSCAN (1 to 1000, validated by the caller)
-- Returns {1, the next cursor ("0": no more), the size of the whole
-- inventory, the page's numbers, sorted}. SSCAN's guarantees hold: a
-- number there for the whole walk is listed at least once (a resize
-- while walking may list it twice), one added or taken meanwhile may or
-- may not be.
local page = redis.call("SSCAN", KEYS[1], ARGV[1], "COUNT", ARGV[2])
local numbers = page[2]

table.sort(numbers)

return {1, page[1], redis.call("SCARD", KEYS[1]), numbers}
