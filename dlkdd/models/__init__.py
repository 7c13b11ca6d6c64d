"""Models: R(2+1)D trunks, temporal heads, the classifier/teacher, light enhancers, cost profile.

See docs/INTERNALS.md ("Models") for the interfaces and shapes.
"""
from .bert_head import AvgHead, BertHead
from .classifier import Classifier, Teacher, arch_dict, build_classifier, classifier_from_arch
from .profile import profile_model
from .r2plus1d import VideoResNet, build_r2plus1d, load_pretrained
from .enhancers import build_enhancer
from .zerodce import ZeroDCE

__all__ = [
    "AvgHead",
    "BertHead",
    "Classifier",
    "Teacher",
    "VideoResNet",
    "ZeroDCE",
    "arch_dict",
    "build_classifier",
    "build_enhancer",
    "build_r2plus1d",
    "classifier_from_arch",
    "load_pretrained",
    "profile_model",
]
