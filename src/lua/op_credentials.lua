-- Operator API: issue (rotate) a provisioning account's key id and
-- secret, first step (the account's slot): the account names its new key
-- id, and from this moment on refuses every other one (the account step
-- of a preview, limits or confirm compares the presented key id with
-- key_id). Then nginx writes the new lg:sbkey:<key id> lookup (its own
-- slot) and deletes, each if it still names the account
-- (op_sbkey_drop), the lookups of the key ids retired here and in the
-- last rotations before: the account keeps them (retired_key_ids, the
-- newest first, at most LG_RETIRED_MAX), so that a lookup written late
-- (a rotation racing this one writes its lookup after this one's drops)
-- or never dropped (a rotation whose reply was lost) is deleted by a
-- later rotation instead of staying for good. Such a lookup never
-- authenticates meanwhile: its key id is not the account's key_id.
-- KEYS[1] lg:{acct:A}
-- ARGV[1] new key id, ARGV[2] now, ISO 8601
-- Returns {0} when the account does not exist (nothing written), else
-- {1, {the key ids whose lookups to delete}}.
local LG_RETIRED_MAX = 8

if redis.call("EXISTS", KEYS[1]) == 0 then
    return {0}
end

local cur = redis.call("HMGET", KEYS[1], "key_id", "retired_key_ids")
local retired = {}

for id in string.gmatch((cur[1] or "") .. "," .. (cur[2] or ""), "[^,]+") do
    if id ~= ARGV[1] and #retired < LG_RETIRED_MAX then
        retired[#retired + 1] = id
    end
end

redis.call("HSET", KEYS[1], "key_id", ARGV[1], "updatedAt", ARGV[2],
           "retired_key_ids", table.concat(retired, ","))

return {1, retired}
