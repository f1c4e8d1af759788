"""Stand-ins for the outside world, for `orca-tokens demo`, the tests, the benchmarks and the
chaos run: a simulated Tradovate, an embedded redis-server. Nothing in the product imports this
package except the CLI's `demo` verb."""
