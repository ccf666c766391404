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
-- nothing), and its time as sweepTo when it is the latest (the sweep's
-- window ends there). Released otherwise, the sweep is done: sweepFrom
-- and sweepTo go too.
-- A caller that does not know whether its claim was taken (its reply
-- lost, or not acknowledged) knows no invoiceSeq (ARGV[3] ''): it names
-- the claim by reissueBy (ARGV[7]), and always releases it lapsed
-- (ARGV[5] '1': the claim may have taken over a lapsed one).
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws, ARGV[2] id (not read), ARGV[3] invoiceSeq of the claim
-- ('': unknown),
-- ARGV[4] the Stripe customer (not read: nginx's next write), ARGV[5] '1'
-- when the lapsed claim's invoices are still to be looked for, else '',
-- ARGV[6] a new invoice the request made and did not discard (absent:
-- none; the request's pool cleanup), ARGV[7] the claim's reissueBy
-- (with ARGV[3] '')
-- Returns {own, stored}: own 1 when the claim is this one's (released,
-- now or by an earlier run of the same write or its store: then nothing
-- is written, lapsed or not), else 0 (logged); stored 1
-- when the request names ARGV[6] (its store ran: nothing to queue),
-- else 0.
local lkey = KEYS[1]
local h = redis.call('HMGET', lkey, 'invoiceSeq', 'invoiceId', 'reissueAt',
                     'sweepFrom', 'reissueBy', 'sweepTo')
local own, stored = 0, 0
local mine = h[1] and h[1] == ARGV[3]

if ARGV[3] == '' then
    mine = ARGV[7] and h[3] and h[3] ~= '0' and h[5] == ARGV[7]
end

if mine then
    if not h[3] then
        -- released already: by its store (which named the invoice, the
        -- sweep done), or by an earlier run of this write. Released
        -- lapsed again it would make up a lapsed claim, reissueAt 0, on
        -- a request with none: its invoice's void refused by wh_invoice,
        -- the next payment_link or cancel sweeping for nothing
    elseif ARGV[5] == '1' then
        -- its own time is where the next sweep starts, if the earliest
        -- (a claim that took over nothing and was fenced has no sweepFrom)
        local at, from = tonumber(h[3]), tonumber(h[4])
        if at and at > 0 and (not from or at < from) then
            redis.call('HSET', lkey, 'sweepFrom', h[3])
        end
        if at and at > (tonumber(h[6]) or 0) then
            redis.call('HSET', lkey, 'sweepTo', h[3])
        end
        redis.call('HSET', lkey, 'reissueAt', 0)
        redis.call('HDEL', lkey, 'reissueBy')
    else
        redis.call('HDEL', lkey, 'reissueAt', 'sweepFrom', 'sweepTo',
                   'reissueBy')
    end
    own = 1
end

if ARGV[6] and ARGV[6] ~= '' and h[2] == ARGV[6] then
    stored = 1
end

return {own, stored}
