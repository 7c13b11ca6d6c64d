"""The learned projection of a student's pooled feature onto a teacher's feature space.

``FeatureProjector(student_dim, teacher_dim)``: (B, D_s) -> (B, D_t), one ``nn.Linear`` with bias
(FitNets' "regressor", Romero et al. 2015, section 2.2, here on pooled features rather than maps).
It is trained with the student and used only by the feature term (:func:`dlkdd.losses.feature_loss`);
it is not part of the deployed classifier.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureProjector"]


class FeatureProjector(nn.Module):
    """Linear map D_s -> D_t of pooled features: (B, D_s) -> (B, D_t)."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        if student_dim < 1 or teacher_dim < 1:
            raise ValueError(f"FeatureProjector needs dimensions >= 1, got {student_dim} -> {teacher_dim}")
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.proj.in_features:
            raise ValueError(f"FeatureProjector expects (B,{self.proj.in_features}), got {tuple(x.shape)}")
        return self.proj(x)
