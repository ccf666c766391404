-- A Stripe invoice event settles the line request the invoice pays.
--
-- KEYS[1]  lg:{ws:W}:event:<event id> (de-duplication: an event is
--          applied once; under the workspace's tag)
-- KEYS[2]  lg:{ws:W}:lr:<ARGV[7]>  KEYS[3]  lg:{ws:W}:lines
-- KEYS[4]  lg:{ws:W}:live  KEYS[5]  lg:{ws:W}:pending
-- KEYS[6]  lg:{ws:W}: the workspace, its stripeCustomerId read for a
--          request that keeps no customer
-- KEYS[7]  lg:provisioning (one Redis only: not declared on a cluster,
--          where it is another slot)
-- ARGV[1]  invoice id
-- ARGV[2]  'paid' or 'void' (voided and marked_uncollectible)
-- ARGV[3]  now, Unix ms
-- ARGV[4]  now, ISO 8601
-- ARGV[5]  seconds to remember event ids
-- ARGV[6]  W, ARGV[7] the request id: what lg:invoice:<invoice id> holds,
--          read by nginx in its own step before this one (an invoice the
--          index does not know is answered there, and this does not run)
-- ARGV[8]  'w' (one Redis: the set-up entry appended here) or 'c' (a
--          Redis Cluster: nginx appends it after this step, from the
--          member of lg:{fleet}:lr:setup it wrote before it)
--
-- Returns  {0, pending, customer, from, to}
--                                  event seen before: nothing done;
--                                  pending 1 while the request is marked
--                                  sweepPending (see claim below: a
--                                  redelivery queues it again)
--          {1}                     no line request for this invoice (the
--                                  request gone, ended, or naming another
--                                  one with no claim held)
--          {4}                     a void while payment_link reissues
--                                  the request's invoice (a claim held,
--                                  past its hold, or released lapsed):
--                                  nothing done,
--                                  refused so that Stripe delivers it
--                                  again once the claim is over
--          {5, reservedAt}         the request does not name this
--                                  invoice yet but may come to (awaiting
--                                  payment with none, or a payment_link
--                                  claim not released, past its hold
--                                  too): nothing done, refused so
--                                  that Stripe delivers it again;
--                                  reservedAt (ms, '' when none): nginx
--                                  logs a request whose creation is
--                                  over (older than
--                                  linegate_reconcile_lost_after): only
--                                  a reconciliation run settles it
--          {3, status, changed, channelType, lineType, 0,
--           claim, customer, from, to}
--                                  settled (changed 1) or left alone (0);
--                                  'provisioning' with changed 1 is the
--                                  report of a set-up entry (appended
--                                  here in mode 'w', by nginx in 'c');
--                                  the sixth value is always 0 (it was
--                                  `reopened` until 2026-11-29); claim 1:
--                                  marked sweepPending (lr_settle: it
--                                  ended while it held a payment_link's
--                                  claim, maybe lapsed with an invoice
--                                  left unstored): nginx queues it
--                                  (reissue_lapsed) for a run to look
--                                  under its customer from `from` (ms)
--                                  on (to `to`, ms, plus an hour, when
--                                  not empty), and clears the mark once
--                                  queued
--          {8, customer}           a payment of the invoice a canceled
--                                  request names (an uncollectible one
--                                  paid late): nothing done, nothing
--                                  remembered; nginx queues it for a
--                                  human (lr_invoice_orphan,
--                                  paid_after_cancel) before its 200, so
--                                  that a redelivery queues it again
--                                  (its marker answers 0), never twice
--
-- The event id is remembered once the event is applied (settled or left
-- alone), never before: an event that changed nothing stays deliverable.
--
-- customer (both answers): the one the request was billed to, else the
-- workspace's stripeCustomerId (a request made before requests kept
-- their customer was billed, and is reissued and swept, under it:
-- lr_manage), where a reconciliation run looks. Until 2026-11-29 the
-- request's own alone, '' for such a request: nginx then read the
-- workspace's itself, one more round trip after the answer
-- (lines_lapsed), and a paid_after_cancel entry was queued with none.

--#include lr_settle

-- the customer the request was billed to, else the workspace's ('')
local function lg_wh_customer(customer)
    if customer and customer ~= '' then
        return customer
    end
    return redis.call('HGET', KEYS[6], 'stripeCustomerId') or ''
end

-- the request's sweepPending mark: {1, customer, from, to}, or
-- {0, '', '', ''} (to: sweepPendingTo, '' when none)
local function lg_wh_pending(lkey)
    local h = redis.call('HMGET', lkey, 'sweepPending', 'customer',
                         'sweepPendingTo')
    if not h[1] then
        return 0, '', '', ''
    end
    return 1, lg_wh_customer(h[2]), h[1], h[3] or ''
end

-- A request that may still come to name this invoice: its index is
-- written (and answered) before the store that names it, lr_invoice_store
-- for a request awaiting payment with none, lr_reissue_store while a
-- payment_link's claim is not released; a store lost and sent again (durable)
-- lands seconds later. Acknowledged as unknown, the event would never
-- come again; refused, Stripe delivers it again once the store landed.
-- A void of an invoice a run fences (voidingInvoice) is not waited for:
-- both stores refuse it unless paid, and the run voids it itself.
local function lg_wh_unnamed_yet(cur)
    if cur[3] ~= 'awaiting_payment' then
        return false
    end
    if ARGV[2] == 'void' and cur[4]
       and string.find(' ' .. cur[4] .. ' ', ' ' .. ARGV[1] .. ' ', 1, true)
    then
        return false
    end
    if not cur[1] then
        return true
    end
    -- A claim not released, held or past its hold: lr_reissue_store
    -- checks the claim's invoiceSeq, not its age, so a claim past its
    -- hold that no payment_link took over still stores its invoice (a
    -- slow worker, a store sent again). reissueAt 0: a claim released
    -- lapsed, no store on its way. A claim whose worker died keeps the
    -- event refused until a payment_link takes it over (its sweep voids
    -- the invoice and drops its index) or the request ends.
    return cur[2] and (tonumber(cur[2]) or 0) > 0 or false
end

local ekey = KEYS[1]
if redis.call('EXISTS', ekey) == 1 then
    local pending, customer, from, to = lg_wh_pending(KEYS[2])
    return {0, pending, customer, from, to}
end

local ws, id = ARGV[6], ARGV[7]

-- a reissued request pays a new invoice: events of the old one are stale
local cur = redis.call('HMGET', KEYS[2], 'invoiceId', 'reissueAt',
                       'provisioningStatus', 'voidingInvoice', 'reservedAt')
if cur[1] ~= ARGV[1] then
    if lg_wh_unnamed_yet(cur) then
        return {5, cur[5] or ''}
    end
    return {1}
end

-- while payment_link reissues (its claim held), the void of the old
-- invoice is its own (an uncollectible one is voided before the new one
-- is issued): not a cancel now. This is the only guard: the old invoice
-- keeps its index while the claim is held (so that a payment of it
-- settles the request, even once the reissuing worker died), and nginx
-- deletes it only after the new invoice is stored. Refused, not
-- acknowledged: Stripe delivers it again, and once the claim is over it
-- is stale (a new invoice stored) or applies (the reissue gave up after
-- the void).
-- A claim past its hold, or released lapsed (reissueAt 0), is refused
-- too: its worker may have died after Stripe finalized an invoice it
-- never stored, maybe paid at its finalize (a credit balance), and this
-- script cannot look at Stripe. The next payment_link or cancel takes
-- the claim over and sweeps first (a paid invoice promotes the request,
-- none: it is canceled; a GET's check leaves such a request as it is);
-- this event is then stale or applies. Before 2026-11-28 the void
-- canceled the request at once, a paid invoice left to a human.
if ARGV[2] == 'void' and cur[2] then
    return {4}
end

-- SPEC 2.3: canceled is an end state. Stripe lets an uncollectible
-- invoice be paid later; its request stays canceled, the payment is a
-- human's (refunded, or the line given by hand)
if ARGV[2] == 'paid' and cur[3] == 'canceled' then
    return {8, lg_wh_customer(redis.call('HGET', KEYS[2], 'customer'))}
end

local stream = ARGV[8] == 'w' and KEYS[7] or nil
local status, changed, channel, line_type =
    lg_lr_settle(stream, KEYS[2], KEYS[3], KEYS[4], KEYS[5], ws, id,
                 ARGV[2], ARGV[3], ARGV[4])
if not status then
    return {1}
end

redis.call('SET', ekey, ARGV[3], 'EX', tonumber(ARGV[5]))

local claim, customer, from, to = lg_wh_pending(KEYS[2])

return {3, status, changed and 1 or 0, channel or '', line_type or '',
        0, claim, customer, from, to}
