
/* linegate: line_manage (placeholder). */
