
/* linegate: line_create (placeholder). */
