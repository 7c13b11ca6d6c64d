"""The learned projection of a student's pooled feature onto a teacher's feature space.

``FeatureProjector(student_dim, teacher_dim)``: (B, D_s) -> (B, D_t), one ``nn.Linear`` with bias
(FitNets' "regressor", Romero et al. 2015, section 2.2, here on pooled features rather than maps).
It is trained with the student and used only by the feature term (:func:`dlkdd.losses.feature_loss`);
it is not part of the deployed classifier.

``ProjectedStudent(student, projector)``: what the student stage trains when the feature term is on.
``forward(x (B,3,T,H,W))`` -> the student's logits (B,C); ``forward(x, return_features=True)`` ->
``(logits (B,C), projector(feature) (B,D_t))``. Its ``state_dict`` / ``load_state_dict`` are the
student's alone, so every checkpoint of the run (``last.pt``, ``best.pt``, ``student.pt``) holds a
plain student that evaluates and exports as any other; the projector is trained (it is a submodule,
so the optimiser and DDP see it) and then discarded. A resumed run re-initialises it.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["FeatureProjector", "ProjectedStudent"]


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


class ProjectedStudent(nn.Module):
    """A student with the feature term's projector attached for training (see the module doc)."""

    def __init__(self, student: nn.Module, projector: FeatureProjector):
        super().__init__()
        self.student = student
        self.projector = projector

    def forward(self, x: torch.Tensor, return_features: bool = False):
        if not return_features:
            return self.student(x)
        logits, feature = self.student(x, return_features=True)
        return logits, self.projector(feature)

    def state_dict(self, *args, **kwargs):  # the student's: checkpoints never hold the projector
        return self.student.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.student.load_state_dict(state_dict, strict=strict, assign=assign)

    def train_state_dict(self) -> dict:
        """The projector's weights, kept in ``last.pt`` beside the student's (``train_state``) so that a
        resumed run continues with the projector the optimizer's moments belong to."""
        return self.projector.state_dict()

    def load_train_state_dict(self, state: dict) -> None:
        self.projector.load_state_dict(state)
