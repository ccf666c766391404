-- Reconciliation: an entry of lg:{fleet}:reconcile is settled. It moves, with
-- its outcome, to lg:{fleet}:reconciled (the history the operator API shows,
-- capped at about 10,000 entries), in one step; when the outcome released
-- the number the entry held (its phone_number: a purchase's reservation
-- dropped by pv_release, no line holding it), the number goes back to
-- the inventory in that same step, so once per entry.
--
-- KEYS[1]  lg:{fleet}:reconcile             KEYS[2]  lg:{fleet}:reconciled
-- KEYS[3]  lg:{fleet}:inventory
-- KEYS[4]  lg:{fleet}:held (pv_claim.lua): a number given back leaves it
-- ARGV[1]  the entry's id           ARGV[2]  outcome
-- ARGV[3]  what was found at Stripe ("" when nothing, or the entry's own)
-- ARGV[4]  now, ISO 8601
-- ARGV[5]  the field that names it: subscription_id, invoice_id
-- ARGV[6]  "1": the entry's phone_number returns to the inventory
-- ARGV[7]  the refund of its first invoice (a refund id, "none",
--          "already_refunded"), "" when none was looked for: no field
-- ARGV[8]  the refunds of its later paid invoices, separated by spaces,
--          "" when none (or not given): no field
-- ARGV[9]  (optional) not settled but held for a human, and why
--          (named_missing): the entry is queued again in its place, in
--          this step, with its fields, ARGV[5] set to ARGV[3], and
--          'hold' ARGV[9], 'held_at' ARGV[4]; a run leaves a held entry
--          without a Stripe call (reconcile.c). Once: the old one gone,
--          a step sent again finds nothing (0). ARGV[2], [6..8] unread
--
-- Returns 1, or 0 when the entry is gone (another run settled it):
-- nothing is written twice.

local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])

if #e == 0 then
    return 0
end

local fields = {'entry', ARGV[1]}
local src = e[1][2]

local named = false

for i = 1, #src, 2 do
    local v = src[i + 1]
    if src[i] == ARGV[5] then
        named = true
        if ARGV[3] ~= '' then
            v = ARGV[3]
        end
    end
    fields[#fields + 1] = src[i]
    fields[#fields + 1] = v
end

if not named then
    fields[#fields + 1] = ARGV[5]
    fields[#fields + 1] = ARGV[3]
end

if ARGV[9] ~= nil and ARGV[9] ~= '' then
    -- held: the fields as read, for the operator and the runs after
    table.remove(fields, 1)
    table.remove(fields, 1)
    fields[#fields + 1] = 'hold'
    fields[#fields + 1] = ARGV[9]
    fields[#fields + 1] = 'held_at'
    fields[#fields + 1] = ARGV[4]
    redis.call('XADD', KEYS[1], '*', unpack(fields))
    redis.call('XDEL', KEYS[1], ARGV[1])
    return 1
end

fields[#fields + 1] = 'outcome'
fields[#fields + 1] = ARGV[2]
fields[#fields + 1] = 'resolved_at'
fields[#fields + 1] = ARGV[4]

if ARGV[7] ~= nil and ARGV[7] ~= '' then
    fields[#fields + 1] = 'refund'
    fields[#fields + 1] = ARGV[7]
end

if ARGV[8] ~= nil and ARGV[8] ~= '' then
    fields[#fields + 1] = 'later_refunds'
    fields[#fields + 1] = ARGV[8]
end

redis.call('XADD', KEYS[2], 'MAXLEN', '~', 10000, '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])

if ARGV[6] == '1' then
    for i = 1, #src, 2 do
        if src[i] == 'phone_number' and src[i + 1] ~= '' then
            redis.call('SADD', KEYS[3], src[i + 1])
            redis.call('SREM', KEYS[4], src[i + 1])
        end
    end
end

return 1
