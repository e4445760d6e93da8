"""A tiny package outside ``landscape``: the CLI tests name its models as ``tests_pkg.nets:make``."""
