-- payment_link could not issue a new invoice: release the claim and give
-- the old invoice its webhook index back.
-- KEYS[1] lg:{ws:W}:lr:<id>,
-- KEYS[2] lg:invoice:<the old invoice id>
-- ARGV[1] ws, ARGV[2] id, ARGV[3] the old invoice id
local lkey = KEYS[1]
redis.call('HDEL', lkey, 'reissueAt')
if redis.call('HGET', lkey, 'invoiceId') == ARGV[3] then
    redis.call('SET', KEYS[2], ARGV[1] .. ':' .. ARGV[2])
end
return 1
