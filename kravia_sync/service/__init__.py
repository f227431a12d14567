"""The long-running daemon: schedules, passes, health, metrics and the webhook listener."""
