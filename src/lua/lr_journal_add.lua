-- POST /api/line-requests, JOURNAL (the fleet's slot): a reservation's
-- member "<W> <id>" enters the Lines API's in-flight journal before any
-- Stripe call, so that the reconciliation's sweep finds the request if
-- its worker dies while it bills (lr_journal_settle.lua settles it).
-- A script rather than a plain ZADD only so that linegate_redis_wait
-- acknowledges it as it does the other writes of the money path: a
-- member lost with its master would leave an invoice nobody sweeps.
--
-- KEYS[1]  lg:{fleet}:lr:inflight
-- ARGV[1]  now, Unix ms (the score the sweep ages it by)
-- ARGV[2]  the member, "<W> <id>"
--
-- Returns ZADD's answer (1 added, 0 already there: a retry).

return redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
