"""Benchmarks: scripts that measure speed and learning, each writing ``results/<name>.{md,csv,png}``.

Run them from the repository root as modules (``python -m benchmarks.<name>``); afterwards
``python -m benchmarks.make_readme`` assembles ``benchmarks/README.md`` from the result files.
"""
