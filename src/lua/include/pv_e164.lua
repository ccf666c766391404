-- The inventory's rule for a number that can be sold, as
-- ngx_http_linegate_e164_valid() (src/ngx_http_linegate_chars.c) writes
-- it: "+" and 8 to 15 digits, the first not 0. One copy for the scripts
-- that draw from the inventory (pv_claim), look at it for a preview
-- (pv_stock) and take numbers back from the quarantine
-- (op_quarantine_release).

local function lg_pv_e164(n)
    return #n >= 9 and #n <= 16 and string.find(n, '^%+[1-9]%d+$') ~= nil
end
