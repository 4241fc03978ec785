"""Benchmarks: our worker against the physical limit (one plain UPDATE), measured in the
same run on identical database copies, reported as ratios."""
