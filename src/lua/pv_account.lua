-- POST /accounts/lines/provision-preview and GET /accounts/limits, for
-- credentials the worker does not know: the account of a key id and
-- secret, and nothing else. The endpoint's reads and its decision follow
-- as plain commands (src/ngx_http_linegate_provision_plain.c), the path
-- every known account takes: the plan, window and inventory rules of a
-- preview are written once, in C. One more round trip than a script that
-- would decide, paid on a cache miss only: the worker learns the
-- credentials from this reply.
--
-- KEYS[1]  lg:sbkey:<key id>
-- ARGV[1]  sha256hex of the presented secret
--
-- Returns the account id, or nil when the credentials are not good.

--#include pv_auth

return lg_pv_auth(KEYS[1], ARGV[1]) or false
