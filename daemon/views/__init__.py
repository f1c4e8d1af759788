"""What operators see, built from Redis: the tables and JSON of `check`, `status` and the demo.
No I/O of its own beyond Redis reads."""
