
/* linegate: idempotency of line request creation (placeholder). */
