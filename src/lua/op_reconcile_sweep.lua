-- Reconciliation: the Lines API paid add-ons whose worker died (SIGKILL,
-- a crash) between their reservation and their invoice's store, found
-- by their in-flight index (lg:{fleet}:lr:inflight). Each one older than
-- the cutoff is queued on the reconcile stream as worker_lost, for the
-- run to settle like any entry: the request is awaiting_payment with no
-- invoice (the workspace can request nothing else), and Stripe may hold
-- an invoice no request names.
--
-- The provisioning purchases a dead worker left (the claims of
-- lg:{fleet}:pv:inflight) are not swept here: the run settles each claim
-- in steps of one slot each (pv_inspect, pv_settle; reconcile.c).
--
-- KEYS[1]  lg:{fleet}:lr:inflight (members "<workspace> <request id>",
--          score: ms)
-- KEYS[2]  lg:{fleet}:reconcile
-- The workspaces' keys (lg:{ws:W}...) are derived from the members read:
-- other slots (issue 10).
-- ARGV[1]  cutoff, Unix ms         ARGV[2]  at most this many
--
-- Returns the number queued.

--#include pv_queue

local queued = 0

for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],
                              'LIMIT', 0, tonumber(ARGV[2]))) do
    local ws, id = string.match(m, '^(%S+) (%S+)$')

    if ws then
        local wkey = 'lg:{ws:' .. ws .. '}'
        local lr = redis.call('HMGET', wkey .. ':lr:' .. id,
                              'provisioningStatus', 'invoiceId', 'createdAt',
                              'idem')

        if lr[1] == 'awaiting_payment' and not lr[2] then
            -- idempotency_key: the digest of the key it holds, freed
            -- with the reservation (lr_release)
            local mkey = wkey .. ':reconcile:w:lr_' .. id
            queued = queued + lg_pv_queue(mkey, KEYS[2], {
                'workspace', ws, 'line_request_id', id,
                'reason', 'worker_lost', 'idempotency_key', lr[4] or '',
                'customer',
                redis.call('HGET', wkey, 'stripeCustomerId') or '',
                'at', lr[3] or ''})
        end
    end

    redis.call('ZREM', KEYS[1], m)
end

return queued
