-- GET /api/line-requests/:id and GET /api/lines/check-availability: the
-- request with today's usage, in one round trip; for a read that may
-- reconcile, also claim the Stripe check so that parallel polls of one
-- request make one call per interval.
--
-- ARGV[1..6] see lr_gate
-- ARGV[7] id, ARGV[8] UTC date (YYYY-MM-DD), ARGV[9] now (ms),
-- ARGV[10] reconcile interval (ms; "" when this read never reconciles),
-- ARGV[11] ms during which an invoice being reissued is left alone
--
-- Returns {LR_OK, ws, remaining, claimed (0/1), line} (see lr_line),
-- {LR_NOT_FOUND, ws, remaining} or the gate's answer.
--#include lr_codes
--#include lr_gate
--#include lr_line

local ws, code, left = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

local wkey = 'lg:{ws:' .. ws .. '}'
local line = lg_lr_line(wkey, ARGV[7], ARGV[8])
if not line then
    return {LR_NOT_FOUND, ws, left}
end

local claimed = 0
if ARGV[10] ~= '' then
    local now = tonumber(ARGV[9])
    local lkey = wkey .. ':lr:' .. ARGV[7]
    local h = redis.call('HMGET', lkey, 'provisioningStatus', 'invoiceId',
                         'reconciledAt', 'reissueAt')
    if h[1] == 'awaiting_payment' and h[2]
       and now - tonumber(h[3] or '0') >= tonumber(ARGV[10])
       and now - tonumber(h[4] or '0') >= tonumber(ARGV[11])
    then
        redis.call('HSET', lkey, 'reconciledAt', ARGV[9])
        claimed = 1
    end
end

return {LR_OK, ws, left, claimed, line}
