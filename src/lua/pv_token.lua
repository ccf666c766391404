-- POST /accounts/lines/provision-confirm, TOKEN (the token's own slot),
-- for a token whose slot is not the account's (another account's, or a
-- name no preview gave): the account's own tokens are spent inside
-- pv_reserve.lua, one step less. The account's step follows, told what
-- this one answered.
--
-- KEYS[1]  lg:pv:{<tag>}:<digest> (include/pv_spend.lua)
-- ARGV[1]  the account of the credentials (AUTH), <A>
-- ARGV[2]  now, Unix ms
--
-- Returns {code}: 200, 403 or 410 (lg_pv_spend)

--#include pv_spend

return {lg_pv_spend(KEYS[1], ARGV[1], tonumber(ARGV[2]))}
