-- GET /api/lines/by-user when its pipeline could not decide (it failed
-- before its timeout: NOSCRIPT; or an API key looked up a second time):
-- the gate alone, the credential checked and the request counted in one
-- step. The lines are then read as the pipeline's are, the index and
-- one HGETALL each in plain commands (docs/performance.md): until
-- 2026-11-29 this script read every line of the workspace, its failed
-- ones too (they stay in :lines for ever, SPEC 2.8), every other client
-- of Redis (of the cluster master) waiting meanwhile (t/192).
-- KEYS[1], [2], [3] and ARGV[1..6] see lr_gate
-- Returns {LR_OK, ws, remaining} (admitted: read the lines) or the
-- gate's (LR_GATE_OK after ARGV[6] 'gate': a deferred error to answer)
--#include lr_codes
--#include lr_gate

local ws, code, left = lg_lr_gate()
if code == LR_GATE_OK and ARGV[6] ~= 'gate' then
    code = LR_OK
end

return {code, ws or '', left}
