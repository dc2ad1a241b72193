"""generators package of the CLIS toolkit."""
