-- payment_link could not issue a new invoice: release the claim. The old
-- invoice's webhook index is given back by nginx, a durable SET of its
-- own slot sent with this step (harmless should the request name another
-- invoice by then: the webhook answers such an index as unknown).
-- KEYS[1] lg:{ws:W}:lr:<id>
-- ARGV[1] ws, ARGV[2] id (not read), ARGV[3] the old invoice id
-- Returns 1 when the request still names the old invoice, else 0.
local lkey = KEYS[1]
redis.call('HDEL', lkey, 'reissueAt')
if redis.call('HGET', lkey, 'invoiceId') == ARGV[3] then
    return 1
end
return 0
