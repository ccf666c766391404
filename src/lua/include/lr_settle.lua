-- Settle a line request that awaits payment, atomically with the outbox.
--
-- lg_lr_settle(stream, lkey, lines, live, pending, ws, id, outcome,
--              now_ms, now_iso) -> status, changed, channelType,
--              lineType
--   stream: lg:provisioning's key, or nil on a Redis Cluster (the stream
--   is another slot: nginx appends the entry after the step, from the
--   journal lg:{fleet}:lr:setup, docs/data-model.md); lkey, lines,
--   live, pending: the request's
--   hash lg:{ws:W}:lr:<id>, lg:{ws:W}:lines, lg:{ws:W}:live and
--   lg:{ws:W}:pending (KEYS[] of the caller)
--   outcome 'paid': awaiting_payment -> provisioning (paymentStatus paid),
--                   and the line is appended to the provisioning stream
--                   (one Redis; on a cluster, status 'provisioning' with
--                   changed is the caller's report that nginx must);
--   outcome 'void': awaiting_payment -> canceled (paymentStatus failed).
--   outcome 'paid' of a canceled request: left alone like any other
--                   (SPEC 2.3: canceled is an end state). Stripe never
--                   lets a voided invoice be paid, but an uncollectible
--                   one stays payable: the caller that sees such a
--                   payment (status 'canceled', changed false, outcome
--                   'paid') queues it for a human (paid_after_cancel:
--                   refund it, or give the line by hand). Before
--                   2026-11-29 it was promoted, back into the index.
-- Either way the workspace's pending marker is cleared if it names this
-- request, and a canceled request leaves the workspace's index of
-- requests (lg:{ws:W}:lines), so that no step walks a workspace's
-- history, and its index of live ones (lg:{ws:W}:live).
-- A promotion from awaiting_payment leaves both alone: the request is
-- in them already. A request that ends while its hash holds a payment_link's
-- claim (reissueAt: one that lapsed may have left an invoice unstored at
-- Stripe, which no payment_link will sweep now) is marked sweepPending,
-- the ms its invoices are to be looked for from (the earliest of
-- sweepFrom and a reissueAt > 0; else its creation), and sweepPendingTo
-- the ms of the latest such claim (the later of sweepTo and a reissueAt
-- > 0; none when neither is known), which bounds the run's list as
-- sweepTo bounds payment_link's sweep: nginx queues it
-- (reissue_lapsed) whenever it reads the mark, and clears it once the
-- queuing answered, so a reply lost on the way loses nothing.
-- Any other current status is left alone (changed = false), so a
-- webhook racing a poll or a cancel cannot apply twice. The callers
-- settle only the invoice the request names (its invoiceId).
-- Returns nil when the request does not exist.

-- lg_lr_provision(stream, ws, id, channelType, lineType, now_iso): the
-- line into the set-up stream, capped (MAXLEN ~): set-up workers read it
-- within minutes, the cap only bounds what nobody reads (lr_create uses
-- it too). stream nil (a cluster): nothing here, nginx appends the same
-- fields after the step (ngx_http_linegate_lr_setup.c)
local function lg_lr_provision(stream, ws, id, channel, line_type, now_iso)
    if not stream then
        return
    end

    redis.call('XADD', stream, 'MAXLEN', '~', 100000, '*',
               'workspace', ws, 'id', id, 'channelType', channel,
               'lineType', line_type, 'at', now_iso)
end

-- lg_lr_created_ms(iso): the Unix ms of a createdAt as nginx writes it
-- ('2026-05-18T14:30:00.000Z'), or nil. lr_create scores the index with
-- the ms its createdAt was written from, so this is that score again,
-- whatever the hash holds besides (reservedAt is gone once the invoice
-- is stored, and a request stored so before has nothing else)
local function lg_lr_created_ms(iso)
    local y, mo, d, h, mi, s, ms = string.match(iso or '',
        '^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.(%d%d%d)Z$')
    if not y then
        return nil
    end

    -- days since 1970-01-01 of a Gregorian date, its year taken from
    -- March so that the leap day ends it (Hinnant's days_from_civil)
    y, mo = tonumber(y), tonumber(mo)
    if mo <= 2 then
        y = y - 1
    end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local doy = math.floor((153 * ((mo + 9) % 12) + 2) / 5) + tonumber(d) - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    local days = era * 146097 + doe - 719468

    return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000
           + tonumber(s) * 1000 + tonumber(ms)
end

local function lg_lr_settle(stream, lkey, lines, live, pending, ws, id,
                            outcome, now_ms, now_iso)
    local cur = redis.call('HMGET', lkey, 'provisioningStatus',
                           'channelType', 'lineType', 'createdAt',
                           'reissueAt', 'sweepFrom', 'sweepTo')
    if not cur[1] then
        return nil, false
    end

    if cur[1] ~= 'awaiting_payment' then
        return cur[1], false, cur[2], cur[3]
    end

    local status
    if outcome == 'paid' then
        status = 'provisioning'
        redis.call('HSET', lkey, 'provisioningStatus', status,
                   'paymentStatus', 'paid', 'updatedAt', now_iso)
        lg_lr_provision(stream, ws, id, cur[2] or '', cur[3] or '',
                        now_iso)
    else
        status = 'canceled'
        redis.call('HSET', lkey, 'provisioningStatus', status,
                   'paymentStatus', 'failed', 'updatedAt', now_iso)
        redis.call('ZREM', lines, id)
        redis.call('ZREM', live, id)
    end

    if cur[5] then
        local at = tonumber(cur[5]) or 0
        local from = tonumber(cur[6] or '0') or 0
        if at > 0 and (from == 0 or at < from) then
            from = at
        end
        if from == 0 then
            from = lg_lr_created_ms(cur[4]) or now_ms
        end
        redis.call('HSET', lkey, 'sweepPending', from)
        -- the latest such claim: the run's list ends an hour after it
        local to = tonumber(cur[7] or '0') or 0
        if at > to then
            to = at
        end
        if to > 0 then
            redis.call('HSET', lkey, 'sweepPendingTo', to)
        else
            redis.call('HDEL', lkey, 'sweepPendingTo')
        end
    end

    if redis.call('GET', pending) == id then
        redis.call('DEL', pending)
    end

    return status, true, cur[2] or '', cur[3] or ''
end
