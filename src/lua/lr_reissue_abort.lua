-- payment_link could not issue a new invoice, or the request ended while
-- it reissued: release the claim if it is still this one's. A claim held
-- past NGX_HTTP_LINEGATE_LR_REISSUE_HOLD may have been taken over by
-- another payment_link (lr_reissue_claim: invoiceSeq + 1, its own
-- reissueAt): that claim is left alone. The old invoice's webhook index
-- was never removed: nothing to give back.
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws, ARGV[2] id (not read), ARGV[3] invoiceSeq of the claim,
-- ARGV[4] the Stripe customer (not read: nginx's next write), ARGV[5] a
-- new invoice the request made and did not discard (absent: none; the
-- request's pool cleanup)
-- Returns {own, stored}: own 1 when the claim is this one's (released,
-- now or by an earlier run of the same write), else 0 (logged); stored 1
-- when the request names ARGV[5] (its store ran: nothing to queue),
-- else 0.
local lkey = KEYS[1]
local h = redis.call('HMGET', lkey, 'invoiceSeq', 'invoiceId')
local own, stored = 0, 0

if h[1] and h[1] == ARGV[3] then
    redis.call('HDEL', lkey, 'reissueAt')
    own = 1
end

if ARGV[5] and ARGV[5] ~= '' and h[2] == ARGV[5] then
    stored = 1
end

return {own, stored}
