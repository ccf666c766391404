-- wrk -t2 -c10 -d10s --latency -s bench/wrk/provision_confirm.lua URL
--
-- POST /accounts/lines/provision-preview then provision-confirm with its
-- token: a purchase through Stripe (t/stub/stripe-stub.pl; the accounts
-- have a customer with a card there, made by bench/seed-extra.pl
-- --stripe-stub). Every preview answer queues its token; the next request
-- a connection sends is a confirm when a token is waiting, else a preview,
-- so previews and confirms alternate about 1:1.
--
-- A token is bound to its account, and wrk's response() does not say which
-- connection (so which request) an answer belongs to: each wrk thread
-- therefore buys on one account of creds.txt (thread i on account i,
-- shifted by $LG_CONFIRM_ACCOUNT_OFFSET).
--
-- done() prints "lg-confirm: <confirms ok> <previews ok> <errors> <s>" and
-- the first unexpected answer; wrk's own totals count both kinds.

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;"
               .. package.path
local lg = require "lgbench"

local preview, queue, head, tail = nil, {}, 1, 0
local hdrs
confirms, previews, errors, first_error = 0, 0, 0, ""

local threads = {}
function setup(thread)
    threads[#threads + 1] = thread
    thread:set("tid", #threads)
end

function init(args)
    local creds = lg.lines("creds.txt")
    local off = tonumber(os.getenv("LG_CONFIRM_ACCOUNT_OFFSET") or "0")
    local c = lg.words(creds[((tid or 1) - 1 + off) % #creds + 1])
    hdrs = { ["sb-api-key-id"] = c[1], ["sb-api-secret-key"] = c[2],
             ["Content-Type"] = "application/json" }
    preview = wrk.format("POST", "/accounts/lines/provision-preview", hdrs, "")
end

function request()
    if head <= tail then
        local tok = queue[head]
        queue[head] = nil
        head = head + 1
        return wrk.format("POST", "/accounts/lines/provision-confirm", hdrs,
                          '{"preview_token":"' .. tok .. '"}')
    end
    return preview
end

function response(status, headers, body)
    if status == 200 then
        local tok = body:match('"preview_token":"(lpv_[^"]+)"')
        if tok then
            previews = previews + 1
            tail = tail + 1
            queue[tail] = tok
            return
        end
        if body:find('"phone_number"', 1, true) then
            confirms = confirms + 1
            return
        end
    end
    errors = errors + 1
    if first_error == "" then
        first_error = status .. " " .. body:sub(1, 200)
    end
end

function done(summary, latency, requests)
    local c, p, e, fe = 0, 0, 0, ""
    for _, t in ipairs(threads) do
        c = c + (t:get("confirms") or 0)
        p = p + (t:get("previews") or 0)
        e = e + (t:get("errors") or 0)
        if fe == "" then fe = t:get("first_error") or "" end
    end
    io.write(string.format("lg-confirm: %d %d %d %.3f\n", c, p, e,
                           summary.duration / 1e6))
    if fe ~= "" then
        io.write("lg-confirm-first-error: " .. fe:gsub("\n", " ") .. "\n")
    end
end
