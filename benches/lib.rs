//! Benchmarks for telejob; see `benches/` and BENCHMARKS.md.
