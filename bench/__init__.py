"""punchgate's benchmarks and chaos harness: `python -m bench` and `python -m bench.chaos`.

Every figure is printed next to a comparison measured in the same run, as a ratio, because
absolute times vary between machines. Results land in docs/performance.md.
"""
