"""Benchmark harness: gpuaug against Keras' ImageDataGenerator, torchvision and albumentations.

From the repository root, or from an installed wheel (where it is ``gpuaug.benchmarks``)::

    python -m benchmarks.bench --help
    gpuaug bench --help

Modules: ``data`` writes a folder of photo-like JPEGs, ``pipelines`` builds each pipeline
under test, ``bench`` times them, ``report`` turns the JSON into a Markdown table and a PNG.
"""
