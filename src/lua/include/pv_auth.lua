-- Provisioning API credentials, checked inside the endpoint's script so
-- that authentication and the work take one round trip.
--
-- lg_pv_auth(sbkey, given) -> account id, or nil
--   sbkey  lg:sbkey:<key id>, hash {account, secret_sha256}
--   given  sha256hex of the presented secret (computed by nginx)
--
-- The digests are compared in constant time: every byte is looked at, no
-- early exit, no branch on the data. Plain VM arithmetic (the sum of
-- squared differences is 0 only when equal), as the benchmark peers do:
-- bit.bxor/bit.bor calls per byte made the whole script ~40% slower.
-- Only the length is checked first; both are 64 hex characters.

local function lg_pv_auth(sbkey, given)
    local cred = redis.call('HMGET', sbkey, 'account', 'secret_sha256')
    local acct, stored = cred[1], cred[2]

    if not acct or not stored or #stored ~= #given then
        return nil
    end

    local sb = {string.byte(stored, 1, -1)}
    local gb = {string.byte(given, 1, -1)}
    local diff = 0
    for i = 1, #sb do
        local d = sb[i] - gb[i]
        diff = diff + d * d
    end

    if diff ~= 0 then
        return nil
    end

    return acct
end
