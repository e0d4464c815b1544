"""dbha check: one supervision round for cron and Nagios."""
