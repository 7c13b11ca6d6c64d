"""The offline logit cache: teacher logits stored once per (teacher checkpoint, training
manifest, view spec) in Zarr or HDF5, read by the student. Import the submodules:

- :mod:`dlkdd.cache.backends`: the Zarr / HDF5 backends, JSON metadata, the format rules.
- :mod:`dlkdd.cache.rowfile`: read / write whole rows of a sharded Zarr array by their bytes.
- :mod:`dlkdd.cache.store`: :class:`~dlkdd.cache.store.LogitStore` (create / open / write / read / mark_complete).
- :mod:`dlkdd.cache.parts`: row sharding and the HDF5 part stores of a multi-process write.
- :mod:`dlkdd.cache.reader`: :class:`~dlkdd.cache.reader.StoreRows`, a store joined to a manifest by key.
- :mod:`dlkdd.cache.keying`: default store names and paths derived from hashes.
- :mod:`dlkdd.cache.lock`: :class:`~dlkdd.cache.lock.WriterLock`, the exclusive writer lock.
- :mod:`dlkdd.cache.match`: ``check_store_matches`` (refuse a store built for other data).
- :mod:`dlkdd.cache.inspect`: ``list_stores``, ``store_info``, ``verify_store``, soft-target statistics.

Building a store is the ``cache_logits`` stage: :mod:`dlkdd.pipeline.cache_logits`.
"""
