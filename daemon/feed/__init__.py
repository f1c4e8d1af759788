"""The desk's one market-data feed: Tradovate's quotes over its websocket, authorized with a held
md token, written to `price:{symbol}:latest` (`protocol` the frames, `quotes` the merging,
`contracts` the front months, `session` one connection, `feed` the supervision)."""
