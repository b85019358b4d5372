"""The benchmarks (``make bench``, ``python -m bench``): one module a concern, the driver in
:mod:`bench.run`. Run from the repository root, so that ``bench`` and ``tests`` (whose serving
helpers the serving section shares) import as packages.
"""
