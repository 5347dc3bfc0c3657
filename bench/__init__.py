"""The GPU benchmarks of the causal sampler (bench/README.md), importable as the package `bench`.

Import it with the repository root on `sys.path` (`from bench import configs`); the root itself is the
ComfyUI node pack and is never imported as a package. The scripts (`bench.py`, `endless.py`, `stream.py`)
run as `python3 bench/<script>.py` and put the root on `sys.path` themselves.
"""
