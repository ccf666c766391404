-- GET /api/line-requests/:id: claim the Stripe check of a request that
-- awaits payment (SPEC 2.5), so that parallel polls of one request make
-- one call per linegate_reconcile_interval. Whether the check is due is
-- decided by nginx alone (ngx_http_linegate_lr_due()), from the hash it
-- has just read; this script only makes the claim atomic: it holds when
-- the fields that decision read are still what it read.
--
-- KEYS[1]  lg:{ws:W}:lr:<id>
-- ARGV[1]  now, Unix ms (the new reconciledAt)
-- ARGV[2..] field, value as read ('' when absent), ...
--
-- Returns 1 when claimed, 0 when the request changed meanwhile.

for i = 2, #ARGV - 1, 2 do
    if (redis.call('HGET', KEYS[1], ARGV[i]) or '') ~= ARGV[i + 1] then
        return 0
    end
end

redis.call('HSET', KEYS[1], 'reconciledAt', ARGV[1])

return 1
