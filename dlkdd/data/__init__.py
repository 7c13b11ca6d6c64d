"""Data: manifests (:mod:`.manifest`), PyAV decoding (:mod:`.video`), replayable views and the view
policies (:mod:`.views`), the clip dataset (:mod:`.dataset`), the bad-clip policy applied before a
stage starts (:mod:`.prepare`), the dataset checker (:mod:`.check`), decode throughput
(:mod:`.throughput`), a synthetic dark dataset (:mod:`.synth`) and the MP4 writer (:mod:`.writer`).
Import the submodules directly; this package imports nothing heavy."""
