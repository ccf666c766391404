-- POST /accounts/lines/provision-confirm, SETTLE (the fleet's slot),
-- after RECORD or RELEASE (the account's slot) has answered: the claim
-- "<A> <worker> <number>" (or the intent "<A> <worker> -", when no
-- number was claimed) leaves the claims journal, and the number goes
-- to its next home in the same step: back to the inventory (the purchase
-- was released and no line holds it), nowhere (the account's line holds
-- it, or the reconcile entry queued here does). The reconciliation sweep
-- settles the claims a confirm left (pv_inspect.lua for the account's
-- side) with this same script.
--
-- Idempotent (a durable write): the number returns only when this run
-- removed the claim, and an entry is queued once per account, worker and
-- reason (KEYS[4], lg_pv_queue's marker: 7 days). Of the two reasons
-- whose entry holds the number (record_failed: the confirm's;
-- worker_lost: the sweep's, when it settled the claim first), only the
-- first is queued (the other's marker, KEYS[6], is looked at): a number
-- is never held by two entries. And worker_lost is queued only by the
-- step that removed the claim: the sweep took the purchase for a dead
-- worker's, but a live one settled it first (its late record refused by
-- the sweep's outbox, pv_inspect.lua), and gave its number its home;
-- an entry holding it too would return it a second time.
--
-- Why 7 days: a settle may come again as long as the purchase can be
-- settled, its outbox kept 7 days (pv_record.lua), the durable write of
-- a worker cut off from Redis re-sent whenever Redis is back. The marker
-- lasted a day until 2026-11-28: the sweep's settle, then the confirm's
-- own a day later, queued the entry twice (the run asked two refunds of
-- one charge). Written after the outbox, the marker outlives it.
--
-- KEYS[1]  lg:{fleet}:pv:inflight   KEYS[2]  lg:{fleet}:inventory
-- KEYS[3]  lg:{fleet}:reconcile
-- KEYS[4]  lg:{fleet}:q:<A>:<worker>:<reason> (lg:{fleet}:q:- when none)
-- KEYS[5]  lg:{fleet}:held (pv_claim.lua): a number given back leaves it
-- KEYS[6]  lg:{fleet}:q:<A>:<worker>:<the other reason>, the marker of
--          the reason whose entry would hold the same number (of
--          record_failed, worker_lost's, and the reverse;
--          lg:{fleet}:q:- for the other reasons, never looked at).
--          Built in C as KEYS[4] is (ngx_http_linegate_pv_settle.c, by
--          keys.c's form; it pairs the reasons as holds below does), no
--          longer cut from KEYS[4] here: every key a script touches is
--          declared (t/016), so a cluster checks it before the step runs
-- ARGV[1]  the claim, "<A> <worker> <number>", or the intent
--          "<A> <worker> -" ('' when unknown)
-- ARGV[2]  "1": the number returns to the inventory, "0": it does not
-- ARGV[3]  reconcile reason, '' for none
-- ARGV[4..] the entry's fields, flat {name, value, ...} (with a reason)
--
-- Returns {claimed: 1 | 0, queued: 1 | 0}.

--#include pv_queue

local claimed = 0
local queued = 0

if ARGV[1] ~= '' and redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
    claimed = 1

    -- an intent "<A> <worker> -" holds no number
    local number = string.match(ARGV[1], '^%S+ %S+ (%S+)$')
    if ARGV[2] == '1' and number and number ~= '-' then
        redis.call('SADD', KEYS[2], number)
        redis.call('SREM', KEYS[5], number)
    end
end

-- the reason whose entry would hold the same number
local holds = {record_failed = 'worker_lost', worker_lost = 'record_failed'}
local reason = ARGV[3]
local other = holds[reason]

if reason == 'worker_lost' and claimed == 0 then
    return {claimed, 0}
end

if other and redis.call('EXISTS', KEYS[6]) == 1 then
    return {claimed, 0}
end

if reason ~= '' and #ARGV > 4 then
    queued = lg_pv_queue(KEYS[4], KEYS[3], {unpack(ARGV, 4)})
end

return {claimed, queued}
