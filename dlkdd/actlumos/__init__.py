"""ActLumos: the second teacher-student family of dlkdd.

Suresh Dass et al., "Seeing in the Dark: A Teacher-Student Framework for Dark Video Action
Recognition via Knowledge Distillation and Contrastive Learning" (ActLumos): single-stream
inference with multi-stream accuracy.

- :mod:`dlkdd.actlumos.fusion` - Dynamic Feature Fusion (per temporal token, softmax weights
  over the streams) and the static (fixed average) variant.
- :mod:`dlkdd.actlumos.teacher` - the dual-stream teacher: dark clip + multi-scale Retinex clip
  through one weight-shared R(2+1)D, fused, BERT head, classifier, SupCon projection; trained
  by ``dlkdd teacher`` with ``model.teacher: actlumos`` (CE + lambda * SupCon).
- :mod:`dlkdd.actlumos.pretrain` - stage 1 of the student: self-supervised InfoNCE pre-training
  on two views of each dark clip (``dlkdd pretrain``); its ``pretrain.pt`` initialises the
  student through ``model.pretrained``. Stage 2 is the usual ``dlkdd student`` on the cache.

Nothing is imported here, so ``dlkdd --help`` stays instant; import the submodules.
"""

__all__ = ["fusion", "teacher", "pretrain"]
