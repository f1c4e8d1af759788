"""Where the daemon reports to besides Redis and its logs: webhook alerts and token history in
PostgreSQL. Each delivers from a queue of its own and never slows a refresh."""
