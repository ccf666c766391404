-- Reconciliation: the purchases whose worker died (SIGKILL, a crash)
-- in the middle, found by their in-flight index. Each one older than the
-- cutoff is queued on the reconcile stream as worker_lost, for the run
-- to settle like any entry:
--
--   a provisioning confirm between reserving a number and recording or
--   releasing it (lg:{fleet}:pv:inflight): the number and the limit slot are
--   held, and Stripe may have billed;
--   a Lines API paid add-on between its reservation and its invoice's
--   store (lg:{fleet}:lr:inflight): the request is awaiting_payment with no
--   invoice (the workspace can request nothing else), and Stripe may
--   hold an invoice no request names.
--
-- KEYS[1]  lg:{fleet}:pv:inflight (members "<account> <worker id>", score: ms)
-- KEYS[2]  lg:{fleet}:lr:inflight (members "<workspace> <request id>")
-- KEYS[3]  lg:{fleet}:reconcile
-- The tenants' keys (lg:{acct:A}..., lg:{ws:W}...) are derived from the
-- members read: other slots (issue 10).
-- ARGV[1]  cutoff, Unix ms         ARGV[2]  at most this many of each
--
-- Returns the number queued.

--#include pv_queue

local queued = 0

local function lost(key)
    return redis.call('ZRANGEBYSCORE', key, '-inf', ARGV[1],
                      'LIMIT', 0, tonumber(ARGV[2]))
end

for _, m in ipairs(lost(KEYS[1])) do
    local acct, worker = string.match(m, '^(%S+) (%S+)$')

    if acct then
        local akey = 'lg:{acct:' .. acct .. '}'
        local resv = redis.call('HMGET', akey .. ':resv:' .. worker,
                                'phone_number', 'createdAt')

        if resv[1] then
            queued = queued + lg_pv_queue(akey, worker, KEYS[3], {
                'account', acct, 'subscription_id', '',
                'phone_number', resv[1], 'worker_id', worker,
                'reason', 'worker_lost', 'idempotency_key', '',
                'customer',
                redis.call('HGET', akey, 'stripeCustomerId') or '',
                'at', resv[2] or ''})
        end
    end

    redis.call('ZREM', KEYS[1], m)
end

for _, m in ipairs(lost(KEYS[2])) do
    local ws, id = string.match(m, '^(%S+) (%S+)$')

    if ws then
        local wkey = 'lg:{ws:' .. ws .. '}'
        local lr = redis.call('HMGET', wkey .. ':lr:' .. id,
                              'provisioningStatus', 'invoiceId', 'createdAt',
                              'idem')

        if lr[1] == 'awaiting_payment' and not lr[2] then
            -- idempotency_key: the digest of the key it holds, freed
            -- with the reservation (lr_release)
            queued = queued + lg_pv_queue(wkey, 'lr_' .. id, KEYS[3], {
                'workspace', ws, 'line_request_id', id,
                'reason', 'worker_lost', 'idempotency_key', lr[4] or '',
                'customer',
                redis.call('HGET', wkey, 'stripeCustomerId') or '',
                'at', lr[3] or ''})
        end
    end

    redis.call('ZREM', KEYS[2], m)
end

return queued
