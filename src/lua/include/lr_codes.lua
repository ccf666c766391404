-- Outcome codes of the Lines API scripts: the first element of every
-- reply. Keep in step with ngx_http_linegate_lr_code_e (lines.h).
local LR_RATE_LIMITED = -2
local LR_UNAUTHORIZED = -1
local LR_GATE_OK = 0
local LR_OK = 1
local LR_RESERVED = 2
local LR_NOT_FOUND = 3
local LR_SUBSCRIPTION = 4
local LR_FORBIDDEN = 5
local LR_READ_ONLY = 6
local LR_PENDING = 7
local LR_NO_CUSTOMER = 8
local LR_REPLAY = 9
local LR_IDEM_MISMATCH = 10
local LR_IDEM_IN_USE = 11
local LR_WRONG_STATE = 12
local LR_BUSY = 13
local LR_COLLISION = 14
local LR_FENCED = 15
