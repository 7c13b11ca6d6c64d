"""The pose family: frozen enhancer -> BlazePose keypoints (a pose store, computed once) -> skeleton network.

- :mod:`dlkdd.pose.blazepose`: MediaPipe BlazePose "full" on uint8 frames -> ``(T,33,4)`` + mask ``(T,)``
  (imports ``mediapipe``; only the pose stage, run in the pose environment, needs it).
- :mod:`dlkdd.pose.sampling`: which video frames are posed, and which stored rows a view reads.
- :mod:`dlkdd.pose.store`: the pose store (Zarr / HDF5; keyed by clip key, content-addressed, resumable).
- :mod:`dlkdd.pose.extract`: the pose stage (decode -> enhance -> BlazePose -> store), shardable by rank.
- :mod:`dlkdd.pose.features`: hip-centred, torso-scaled keypoints and their velocities.
- :mod:`dlkdd.pose.skeleton`: the skeleton network ``(B,T,33,4) -> (B,C)``.
- :mod:`dlkdd.pose.dataset`: windows of stored poses as training / evaluation samples (no video).
- :mod:`dlkdd.pose.family`: everything a stage needs to know about the family, in one object.
- :mod:`dlkdd.pose.stages`: the family's teacher, cache-logits, student and evaluate.
- :mod:`dlkdd.pose.infer`: ``predict`` - new videos posed as a checkpoint's training data was, windows scored
  (in-process, or ``python -m dlkdd.pose.infer`` in the pose environment).
- :mod:`dlkdd.pose.export`: the skeleton network exported with a keypoint input ``(B,T,33,4)``.
"""
