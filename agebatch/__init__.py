"""agebatch: batch age and gender estimation for large archives of face images.

The package is usable from Python without the CLI: `sources` lists inputs, `decode`
and `batching` turn them into uint8 batches, `writer` writes Parquet atomically.
"""

__version__ = "0.1.0"
