"""A running supervisor: its loop, executor, lease keeper, control door, hooks."""
