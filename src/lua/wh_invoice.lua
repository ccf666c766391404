-- A Stripe invoice event settles the line request the invoice pays.
--
-- ARGV[1]  event id (de-duplication: an event is applied once)
-- ARGV[2]  invoice id
-- ARGV[3]  'paid' or 'void' (voided and marked_uncollectible)
-- ARGV[4]  now, Unix ms
-- ARGV[5]  now, ISO 8601
-- ARGV[6]  seconds to remember event ids
--
-- Returns  {0}                     event seen before: nothing done
--          {1}                     no line request for this invoice
--          {3, status, changed}    settled (changed 1) or left alone (0)
--
-- The event id is remembered once the event is applied (settled or left
-- alone), never before: an event that changed nothing stays deliverable.
--
-- Keys: lg:stripe:event:<id>, lg:invoice:<in_id> (global indexes) and the
-- workspace's keys, derived from the index. One Redis only: see
-- docs/data-model.md.

--#include lr_settle

local ekey = 'lg:stripe:event:' .. ARGV[1]
if redis.call('EXISTS', ekey) == 1 then
    return {0}
end

local owner = redis.call('GET', 'lg:invoice:' .. ARGV[2])
if not owner then
    return {1}
end

-- ids never contain ':', but split at the last one all the same
local sep = string.find(owner, ':[^:]*$')
if not sep then
    return {1}
end

local ws = string.sub(owner, 1, sep - 1)
local id = string.sub(owner, sep + 1)

-- a reissued request pays a new invoice: events of the old one are stale
local lkey = 'lg:{ws:' .. ws .. '}:lr:' .. id
if redis.call('HGET', lkey, 'invoiceId') ~= ARGV[2] then
    return {1}
end

local status, changed = lg_lr_settle(ws, id, ARGV[3], ARGV[4], ARGV[5])
if not status then
    return {1}
end

redis.call('SET', ekey, ARGV[4], 'EX', tonumber(ARGV[6]))

return {3, status, changed and 1 or 0}
