
/* linegate: provision_confirm (placeholder). */
