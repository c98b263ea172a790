//! Benchmark support: builders for realistic frames shared by the criterion suites.
