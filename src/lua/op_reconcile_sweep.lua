-- Reconciliation: the confirms whose worker died (SIGKILL, a crash)
-- between reserving a number and recording or releasing it. Their
-- reservation holds the number and the limit slot, and Stripe may have
-- billed: each one older than the cutoff is queued on lg:reconcile as
-- worker_lost, for the run to settle like any entry.
--
-- KEYS[1]  lg:pv:inflight (members "<account> <worker id>", score: ms)
-- ARGV[1]  cutoff, Unix ms         ARGV[2]  at most this many
--
-- Returns the number queued.

--#include pv_queue

local queued = 0
local lost = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1],
                        'LIMIT', 0, tonumber(ARGV[2]))

for _, m in ipairs(lost) do
    local acct, worker = string.match(m, '^(%S+) (%S+)$')

    if acct then
        local akey = 'lg:{acct:' .. acct .. '}'
        local resv = redis.call('HMGET', akey .. ':resv:' .. worker,
                                'phone_number', 'createdAt')

        if resv[1] then
            queued = queued + lg_pv_queue(worker, {
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

return queued
