-- payment_link could not issue a new invoice, or the request ended while
-- it reissued: release the claim if it is still this one's. A claim held
-- past NGX_HTTP_LINEGATE_LR_REISSUE_HOLD may have been taken over by
-- another payment_link (lr_reissue_claim: invoiceSeq + 1, its own
-- reissueAt): that claim is left alone. The old invoice's webhook index
-- was never removed: nothing to give back.
--
-- A claim that took over a lapsed one and has not yet discarded what the
-- lapsed one may have left at Stripe (ARGV[5] '1') is released lapsed,
-- reissueAt 0 rather than none: nobody is kept waiting, and the next
-- claim still knows it must look (lr_reissue_claim), from sweepFrom on
-- (kept, or this claim's own reissueAt when it is earlier or there is
-- none: a claim fenced at its store, LR_FENCED, may have taken over
-- nothing). Released otherwise, the sweep is done: sweepFrom goes too.
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws, ARGV[2] id (not read), ARGV[3] invoiceSeq of the claim,
-- ARGV[4] the Stripe customer (not read: nginx's next write), ARGV[5] '1'
-- when the lapsed claim's invoices are still to be looked for, else '',
-- ARGV[6] a new invoice the request made and did not discard (absent:
-- none; the request's pool cleanup)
-- Returns {own, stored}: own 1 when the claim is this one's (released,
-- now or by an earlier run of the same write), else 0 (logged); stored 1
-- when the request names ARGV[6] (its store ran: nothing to queue),
-- else 0.
local lkey = KEYS[1]
local h = redis.call('HMGET', lkey, 'invoiceSeq', 'invoiceId', 'reissueAt',
                     'sweepFrom')
local own, stored = 0, 0

if h[1] and h[1] == ARGV[3] then
    if ARGV[5] == '1' then
        -- its own time is where the next sweep starts, if the earliest
        -- (a claim that took over nothing and was fenced has no sweepFrom)
        local at, from = tonumber(h[3]), tonumber(h[4])
        if at and at > 0 and (not from or at < from) then
            redis.call('HSET', lkey, 'sweepFrom', h[3])
        end
        redis.call('HSET', lkey, 'reissueAt', 0)
    else
        redis.call('HDEL', lkey, 'reissueAt', 'sweepFrom')
    end
    own = 1
end

if ARGV[6] and ARGV[6] ~= '' and h[2] == ARGV[6] then
    stored = 1
end

return {own, stored}
