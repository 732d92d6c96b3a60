"""Developer scripts: a local dashboard server for browser tests, benchmarks and figures."""
