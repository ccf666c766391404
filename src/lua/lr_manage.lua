-- POST /api/line-requests/:id: may this action run on this request?
-- KEYS[1], [2], [3] and ARGV[1..6] see lr_gate, KEYS[4] lg:{ws:W}:lr:<ARGV[7]>
-- ARGV[7] id, ARGV[8] action (payment_link, cancel), ARGV[9] UTC date
-- (unused: nginx compares it with the usage day in the hash),
-- ARGV[10] now (ms), ARGV[11] ms during which a reissue is in progress
-- Returns {LR_OK, ws, remaining, line, customer, invoiceSeq, lapsed}
-- (customer: the one the request was billed to, else the workspace's
-- stripeCustomerId; lapsed 1 when a reissue claim that lapsed is still
-- in the hash, reissueAt: what it left at Stripe is not swept yet, else
-- 0),
-- LR_NOT_FOUND, {LR_READ_ONLY, .., subscription status}, LR_SUBSCRIPTION
-- (payment_link on a plan that is not active), {LR_WRONG_STATE, ..,
-- status}, {LR_BUSY, .., reservedAt} (the first invoice is being made:
-- the reservation's time, ms, 0 unknown), {LR_BUSY, .., 0, reissueAt}
-- (a reissue claim is held: its time, ms) or the gate's answer.
--#include lr_codes
--#include lr_gate
--#include lr_line

local ws, code, left, wkey = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

local line = lg_lr_line(KEYS[4], ARGV[7])
if not line then
    return {LR_NOT_FOUND, ws, left}
end

local w = redis.call('HMGET', wkey, 'subscriptionStatus', 'stripeCustomerId')
if w[1] == 'past_due' or w[1] == 'unpaid' then
    return {LR_READ_ONLY, ws, left, w[1]}
end

if ARGV[8] == 'payment_link' and w[1] ~= 'active' and w[1] ~= 'trialing'
then
    return {LR_SUBSCRIPTION, ws, left}
end

local h = redis.call('HMGET', KEYS[4], 'provisioningStatus', 'invoiceId',
                     'invoiceSeq', 'reissueAt', 'customer', 'reservedAt')
if h[1] ~= 'awaiting_payment' then
    return {LR_WRONG_STATE, ws, left, h[1] or ''}
end

-- a reservation whose invoice is not stored: its time tells nginx how
-- long it may stay so (a dead worker's waits for a run or lr_create)
if not h[2] then
    return {LR_BUSY, ws, left, tonumber(h[6] or '0') or 0}
end

-- a reissue claim held: its time tells nginx when its hold ends (a dead
-- worker's is taken over then, not sooner)
if tonumber(ARGV[10]) - tonumber(h[4] or '0') < tonumber(ARGV[11]) then
    return {LR_BUSY, ws, left, 0, tonumber(h[4]) or 0}
end

-- A reissue bills the customer the request was billed to, whatever the
-- workspace names later: every invoice of a request is then under one
-- customer, where the sweep of a lapsed claim and a reconciliation run
-- look for them (a request made before it kept one: the workspace's)
local customer = h[5]
if not customer or customer == '' then
    customer = w[2] or ''
end

-- a claim still here is past its hold (or released lapsed, 0): its
-- invoices are to be looked for (a cancel sweeps them first)
return {LR_OK, ws, left, line, customer, h[3] or '0', h[4] and 1 or 0}
