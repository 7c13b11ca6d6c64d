"""Data: manifests (``manifest``), PyAV decoding (``video``), replayable views (``views``),
the torch dataset (``dataset``), a synthetic dark dataset (``synth``) and the dataset
checker (``check``). Import the submodules directly; this package imports nothing heavy."""
