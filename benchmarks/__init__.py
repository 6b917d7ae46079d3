"""Benchmarks beside the library: speed, memory and the matmul floor.

`python -m experiments.benchmark` runs them; research code never imports
them. `speed.py` times epochs, validation, seeds and whole runs; `floor.py`
times the step's matmuls alone and the step built up from them.
"""
