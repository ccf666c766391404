-- GET /api/line-requests/:id and GET /api/lines/check-availability: the
-- credential, the request rate and the request with today's usage, in
-- one round trip. Nothing is decided here: whether a read checks the
-- invoice with Stripe is nginx's rule (ngx_http_linegate_lr_due(), the
-- same for the pipeline of a known workspace), and lr_claim.lua claims
-- that check atomically.
--
-- KEYS[1], [2], [3] and ARGV[1..6] see lr_gate, KEYS[4] lg:{ws:W}:lr:<ARGV[7]>
-- (declared also when the gate alone runs: never touched then)
-- ARGV[7] id, ARGV[8] UTC date (YYYY-MM-DD; unused: nginx
-- compares it with the usage day in the hash)
--
-- Returns {LR_OK, ws, remaining, line} (see lr_line),
-- {LR_NOT_FOUND, ws, remaining} or the gate's answer.
--#include lr_codes
--#include lr_gate
--#include lr_line

local ws, code, left = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

local line = lg_lr_line(KEYS[4], ARGV[7])
if not line then
    return {LR_NOT_FOUND, ws, left}
end

return {LR_OK, ws, left, line}
