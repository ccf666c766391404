-- The answer of a POST /api/line-requests, kept under its idempotency
-- key (SPEC 2.4) so that the same key and body replay it byte for byte.
-- ikey: lg:{ws:W}:idem:<digest> (a KEYS[] of the caller)
local function lg_lr_idem_done(ikey, fp, status, body, ttl)
    redis.call('HSET', ikey, 'state', 'done', 'fp', fp, 'status', status,
               'body', body)
    redis.call('EXPIRE', ikey, tonumber(ttl))
end
