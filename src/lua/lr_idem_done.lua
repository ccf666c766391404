-- POST /api/line-requests: keep the answer of a business outcome under
-- its idempotency key, replacing the lock of the call in flight.
-- ARGV[1] ws, ARGV[2] sha256hex of the key, ARGV[3] fingerprint,
-- ARGV[4] status, ARGV[5] body, ARGV[6] seconds to keep it
--#include lr_idem
lg_lr_idem_done(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 1
