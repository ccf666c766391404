--#include ping_fn
return lg_ping()
