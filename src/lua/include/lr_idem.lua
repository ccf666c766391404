-- The answer of a POST /api/line-requests, kept under its idempotency
-- key (SPEC 2.4) so that the same key and body replay it byte for byte.
-- wkey: lg:{ws:W}, the key is derived from it (its slot)
local function lg_lr_idem_done(wkey, digest, fp, status, body, ttl)
    local key = wkey .. ':idem:' .. digest
    redis.call('HSET', key, 'state', 'done', 'fp', fp, 'status', status,
               'body', body)
    redis.call('EXPIRE', key, tonumber(ttl))
end
