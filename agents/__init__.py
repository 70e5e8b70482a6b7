"""Agent workers: the processes that join rooms to talk, interpret and record."""
