"""Parts of `frugal eval`: benchmarks, s1's sweep metrics, the contamination guard, plots."""
