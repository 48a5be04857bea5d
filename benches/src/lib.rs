//! Benchmarks and the cost simulation for the workspace; see `benches/` and `src/bin/`.
