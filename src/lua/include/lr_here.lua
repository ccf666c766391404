-- Are the line requests the workspace's own data names all on this node?
-- A script can declare in KEYS[] only the keys nginx can name before it
-- runs; the requests named by what it reads (the members of :lines, the
-- id :pending holds, the reservation an idempotency key holds) it reads
-- by name (lg:{ws:W}:lr:<id>, the workspace's slot). While a Redis
-- Cluster migrates that slot, one of them may already be on the other
-- node: on the node the slot leaves, reading it fails (Redis refuses a
-- key that is not local); on the node it reaches, it reads as missing.
-- Neither means the request is gone while the slot moves, so a script
-- that would drop an index entry or count live lines from them asks this
-- once the gate admitted the call (a call it refuses walks nothing),
-- before anything else is written, and answers TRYAGAIN when the answer
-- is no, the gate's admission given back (lg_lr_gate_undo):
-- nginx sends it again, as a cluster's own TRYAGAIN (redis.c), until the
-- workspace is whole on one node (docs/data-model.md, "Scripts and
-- slots"). On one Redis (lr_gate's ARGV[1] 'w') a request that is not
-- there is gone, and nothing is read here.
--
-- lg_lr_key(wkey, id) -> lg:{ws:W}:lr:<id>, wkey KEYS[1] (lg:{ws:W}):
--   the one place a script names a request it read from data (t/016
--   lets lr_create call it, nothing else; lr_list did until 2026-11-29)
-- lg_lr_here(wkey, ids) -> true, or false when one of ids may be on
--   another node; called on a cluster only. A request that reads as
--   missing while the workspace's slot is not migrating nor importing
--   on this node is gone (an operator deleted it): true, and the caller
--   drops it as on one Redis. Only then is the slot's state asked for
--   (CLUSTER NODES, this node's line: "[<slot>->-" migrating, "[<slot>-<-"
--   importing), so a whole workspace costs nothing more.
local function lg_lr_key(wkey, id)
    return wkey .. ':lr:' .. id
end

local function lg_lr_moving(wkey)
    local slot = redis.call('CLUSTER', 'KEYSLOT', wkey)
    for line in string.gmatch(redis.call('CLUSTER', 'NODES'), '[^\n]+') do
        if string.find(line, 'myself', 1, true) then
            return string.find(line, '[' .. slot .. '->-', 1, true) ~= nil
                   or string.find(line, '[' .. slot .. '-<-', 1, true) ~= nil
        end
    end
    return true
end

local function lg_lr_here(wkey, ids)
    local moving
    for _, id in ipairs(ids) do
        -- pcall: the node the slot leaves answers an error
        local n = redis.pcall('EXISTS', lg_lr_key(wkey, id))
        if type(n) ~= 'number' then
            return false
        end
        if n == 0 then
            if moving == nil then
                moving = lg_lr_moving(wkey)
            end
            if moving then
                return false
            end
        end
    end

    return true
end

local LR_TRYAGAIN = 'TRYAGAIN the workspace\'s line requests are moving'
