"""Bytes in and rows out: sources, headers, decoding, the bounded decode queue, and every file agebatch writes.

The pipeline reads ``sources`` -> ``decode`` (``headers`` first) -> ``batching`` and writes through ``writer`` /
``atomic`` / ``jsonio`` under ``lock``, in the columns of ``schemas``; ``manifest`` and ``splits`` are the
manifest format and its content-hash splits. Nothing here knows about faces or models.
"""
