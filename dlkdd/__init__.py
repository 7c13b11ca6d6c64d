"""dlkdd: Dual-Light Knowledge Distillation for action recognition in dark video.

Teacher (light enhancer + R(2+1)D-BERT) -> offline logit cache -> student (R(2+1)D-BERT on
the original dark clips). See README.md and DESIGN.md for the pipeline and contracts.
"""
__version__ = "0.1.0"
