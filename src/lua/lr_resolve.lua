-- Apply what Stripe said of a request's invoice (reconciliation on read,
-- payment_link, cancel, and a creation or payment_link whose new invoice
-- Stripe paid at finalization, after its store): 'paid' promotes, 'void'
-- cancels, through
-- lr_settle, but only while the request still names that invoice (a
-- reissued invoice is not settled by news of the old one).
-- KEYS[1] lg:{ws:W}:lr:<id>, KEYS[2] lg:{ws:W}:lines,
-- KEYS[3] lg:{ws:W}:live, KEYS[4] lg:{ws:W}:pending,
-- KEYS[5] lg:provisioning (one Redis only: not declared on a cluster,
-- where it is another slot)
-- ARGV[1] ws, ARGV[2] id, ARGV[3] invoice id, ARGV[4] 'paid' or 'void',
-- ARGV[5] now (ms), ARGV[6] now (ISO 8601), ARGV[7] UTC date (unused: nginx
-- compares it with the usage day in the hash), ARGV[8] 'w' (one Redis:
-- the set-up entry appended here) or 'c' (a Redis Cluster: not here;
-- changed with 'paid' is the report that nginx appends it, the line's
-- channelType and lineType are in the reply, and nginx wrote the member
-- of lg:{fleet}:lr:setup that covers it before this step)
-- ARGV[9] ms a reissue claim holds (lr_reissue_claim's ARGV[5])
-- Returns {changed (0/1), line} (see lr_line), or {0} when the request
-- is gone.
--
-- 'void' under a reissue claim still held changes nothing: the claim's
-- payment_link read the invoice void too and is making the next one,
-- which Stripe may have paid at its finalize (a credit balance); a
-- cancel or a GET's check that read the old invoice before the claim
-- was taken would cancel the request under it, and the new invoice's
-- store, refused, would leave that payment to a human. The request is
-- answered as it is (awaiting_payment: a cancel's 409 "being issued",
-- a GET's stored state), as wh_invoice refuses such a void. A claim past
-- its hold (lapsed) is not one: cancel sweeps it first, and a GET's
-- check does not resolve over it (lines.c).
--#include lr_settle
--#include lr_line

local changed = false

local cur = redis.call('HMGET', KEYS[1], 'invoiceId', 'reissueAt')
local held = ARGV[4] == 'void' and cur[2]
             and tonumber(ARGV[5]) - (tonumber(cur[2]) or 0)
                 < (tonumber(ARGV[9] or '0') or 0)

if cur[1] == ARGV[3] and not held then
    local _
    local stream = ARGV[8] == 'w' and KEYS[5] or nil
    _, changed = lg_lr_settle(stream, KEYS[1], KEYS[2], KEYS[3], KEYS[4],
                              ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[5]),
                              ARGV[6])
end

local line = lg_lr_line(KEYS[1], ARGV[2])
if not line then
    return {0}
end

return {changed and 1 or 0, line}
