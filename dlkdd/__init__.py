"""dlkdd: Dual-Light Knowledge Distillation for action recognition in dark video.

Teacher (light enhancer + R(2+1)D-BERT) -> offline logit cache -> student (R(2+1)D-BERT on
the original dark clips). See README.md for the pipeline and docs/INTERNALS.md for the module map.
"""
__version__ = "0.1.0"
