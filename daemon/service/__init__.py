"""The long-running process: lifecycle and scheduling, refresh requests, the health server and
systemd notifications."""
