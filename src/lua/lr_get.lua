-- GET /api/line-requests/:id and GET /api/lines/check-availability: the
-- request with today's usage, in one round trip; for a read that may
-- reconcile, also claim the Stripe check so that parallel polls of one
-- request make one call per interval.
--
-- KEYS[1] and ARGV[1..6] see lr_gate (its workspace keys derive from
-- the gate's wkey)
-- ARGV[7] id, ARGV[8] UTC date (YYYY-MM-DD; unused: nginx
-- compares it with the usage day in the hash), ARGV[9] now (ms),
-- ARGV[10] reconcile interval (ms; "" when this read never reconciles),
-- ARGV[11] ms during which an invoice being reissued is left alone
--
-- Returns {LR_OK, ws, remaining, claimed (0/1), line} (see lr_line),
-- {LR_NOT_FOUND, ws, remaining} or the gate's answer.
--#include lr_codes
--#include lr_gate
--#include lr_line

local ws, code, left, wkey = lg_lr_gate()
if code ~= LR_GATE_OK or ARGV[6] == 'gate' then
    return {code, ws or '', left}
end

local line = lg_lr_line(wkey, ARGV[7])
if not line then
    return {LR_NOT_FOUND, ws, left}
end

local claimed = 0
if ARGV[10] ~= '' then
    -- the hash is already read: its fields, not a second HMGET
    local status, invoice, reconciled, reissue
    for i = 1, #line - 1, 2 do
        local k = line[i]
        if k == 'provisioningStatus' then
            status = line[i + 1]
        elseif k == 'invoiceId' then
            invoice = line[i + 1]
        elseif k == 'reconciledAt' then
            reconciled = line[i + 1]
        elseif k == 'reissueAt' then
            reissue = line[i + 1]
        end
    end

    local now = tonumber(ARGV[9])
    if status == 'awaiting_payment' and invoice
       and now - tonumber(reconciled or '0') >= tonumber(ARGV[10])
       and now - tonumber(reissue or '0') >= tonumber(ARGV[11])
    then
        redis.call('HSET', wkey .. ':lr:' .. ARGV[7], 'reconciledAt',
                   ARGV[9])
        claimed = 1
    end
end

return {LR_OK, ws, left, claimed, line}
