"""The teacher cache: stage one's per-anchor teacher responses in a Zarr v3 store, read by stage two.

Layout and attributes: :mod:`stereodistill.cache.schema` and docs/CACHE_FORMAT.md. Writing:
:func:`~stereodistill.cache.writer.write_cache` (driven by params: :mod:`stereodistill.cache.run`).
Reading: :class:`~stereodistill.cache.reader.TeacherCache`. Inspection: :mod:`stereodistill.cache.inspect`.
"""
