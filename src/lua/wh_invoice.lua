-- A Stripe invoice event settles the line request the invoice pays.
--
-- KEYS[1]  lg:stripe:event:<event id> (de-duplication: an event is
--          applied once)
-- KEYS[2]  lg:invoice:<invoice id>  KEYS[3]  lg:provisioning
-- ARGV[1]  invoice id
-- ARGV[2]  'paid' or 'void' (voided and marked_uncollectible)
-- ARGV[3]  now, Unix ms
-- ARGV[4]  now, ISO 8601
-- ARGV[5]  seconds to remember event ids
--
-- Returns  {0}                     event seen before: nothing done
--          {1}                     no line request for this invoice
--          {3, status, changed}    settled (changed 1) or left alone (0)
--
-- The event id is remembered once the event is applied (settled or left
-- alone), never before: an event that changed nothing stays deliverable.
--
-- The workspace's keys (lg:{ws:W}, :lr:<id>, :lines, :pending) are
-- derived from the index KEYS[2] names: another slot than the indexes
-- (issue 10, docs/data-model.md).

--#include lr_settle

local ekey = KEYS[1]
if redis.call('EXISTS', ekey) == 1 then
    return {0}
end

local owner = redis.call('GET', KEYS[2])
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
local wkey = 'lg:{ws:' .. ws .. '}'
if redis.call('HGET', wkey .. ':lr:' .. id, 'invoiceId') ~= ARGV[1] then
    return {1}
end

local status, changed = lg_lr_settle(KEYS[3], wkey, ws, id, ARGV[2],
                                     ARGV[3], ARGV[4])
if not status then
    return {1}
end

redis.call('SET', ekey, ARGV[3], 'EX', tonumber(ARGV[5]))

return {3, status, changed and 1 or 0}
