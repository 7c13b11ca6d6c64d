"""Cost profile: FLOP counting against hand computations, sane numbers, Teacher includes the enhancer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dlkdd.models.classifier import Classifier, Teacher
from dlkdd.models.profile import LiveTensorTracker, count_flops, profile_model
from dlkdd.models.zerodce import ZeroDCE


def test_single_conv3d_flops_match_hand_computation():
    conv = nn.Conv3d(3, 8, kernel_size=(3, 3, 3), padding=1, bias=False)
    shape = (2, 3, 4, 10, 12)
    prof = profile_model(conv, shape, repeats=2)
    macs = 2 * 8 * 4 * 10 * 12 * (3 * 3 * 3 * 3)  # outputs x (C_in k_t k_h k_w)
    assert prof["gmacs"] == pytest.approx(macs / 1e9, rel=0.03)
    assert prof["gflops"] == pytest.approx(2 * macs / 1e9, rel=0.03)
    assert prof["params"] == 8 * 3 * 27
    assert prof["latency_ms"] > 0
    # CPU activation estimate: the conv output, 2*8*4*10*12 float32
    assert prof["peak_mem_mb"] == pytest.approx(2 * 8 * 4 * 10 * 12 * 4 / 2**20, rel=0.05)


def test_linear_and_strided_conv_flops():
    lin = nn.Linear(16, 5)
    assert count_flops(lin, torch.rand(3, 16)) == 2 * 3 * 16 * 5
    conv = nn.Conv3d(4, 6, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)
    # output 1 x 5 x 4 positions per frame, 2 frames
    assert count_flops(conv, torch.rand(1, 4, 2, 10, 8)) == 2 * (6 * 2 * 5 * 4) * (4 * 9)


def test_tracker_counts_live_activations():
    with torch.inference_mode():
        with LiveTensorTracker() as tr:
            a = torch.ones(1024)  # 4 KiB
            b = a * 2  # + 4 KiB
            del a
            c = b + 1  # peak 8 KiB: a freed before c
            del b, c
    assert tr.peak == 8192 and tr.live == 0


def test_profile_classifier_and_teacher_sane():
    torch.manual_seed(0)
    clf = Classifier({"backbone": "r2plus1d_18", "num_classes": 4, "head": "bert"}).train()
    shape = (1, 3, 4, 16, 16)
    p = profile_model(clf, shape, repeats=1)
    assert clf.training  # mode restored
    n = sum(q.numel() for q in clf.parameters())
    assert p["params"] == n and 30e6 < n < 35e6
    assert p["gflops"] > 0 and p["gmacs"] == pytest.approx(p["gflops"] / 2)
    assert 0 < p["peak_mem_mb"] < 500 and p["latency_ms"] > 0
    teacher = Teacher(ZeroDCE(), clf)
    t = profile_model(teacher, shape, repeats=1)
    # ZeroDCE's 7 3x3 convs (3->32, 3x 32->32, 2x 64->32, 64->24) on each of the 4 frames of 16x16
    zdce_macs = 4 * 16 * 16 * 9 * (3 * 32 + 3 * 32 * 32 + 2 * 64 * 32 + 64 * 24)
    assert t["gmacs"] - p["gmacs"] == pytest.approx(zdce_macs / 1e9, rel=0.05)
    assert t["params"] == n + sum(q.numel() for q in teacher.enhancer.parameters())
