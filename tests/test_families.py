"""The family table (dlkdd.models.families) and the objective built once from cfg.kd: every family's
teacher rebuilds from its checkpoint arch, the store metadata follows the family, and the term-list
objective is exactly CE + alpha gamma^epoch KL."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from dlkdd.config import config_from_dict
from dlkdd.config_sections import ConfigError
from dlkdd.data.manifest import Manifest
from dlkdd.models import families
from dlkdd.models.build import model_from_checkpoint
from dlkdd.models.family import DlkddFamily
from dlkdd.train.objectives import DistillationObjective, build_objective, kd_term, task_term, TermsObjective

TINY = {"model": {"backbone": "r2plus1d_tiny", "pretrained": "", "head": "avg"},
        "enhancer": {"kind": "gamma"}, "actlumos": {"proj_dim": 8}}


# a model's input per family: video clips (B,3,T,H,W), or for the pose family keypoints (B,T,33,4)
INPUTS = {"pose": torch.rand(2, 8, 33, 4)}


@pytest.mark.parametrize("name", sorted(families.FAMILIES))
def test_every_family_rebuilds_its_teacher_from_the_arch(name):
    cfg = config_from_dict(dict(TINY, model=dict(TINY["model"], teacher=name)))
    fam = families.family(name)
    torch.manual_seed(0)
    model = fam.build_teacher(cfg, 3).eval()
    arch = fam.teacher_arch(cfg, 3)
    assert arch["family"] == name and families.family_of_arch(arch) is fam
    back = model_from_checkpoint({"arch": arch, "model": model.state_dict()})
    x = INPUTS.get(name, torch.rand(2, 3, 4, 16, 16))
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))
        if fam.feature_dim(arch):  # 0: the family caches no features (pose)
            _, feat = model(x, return_features=True)
            assert feat.shape == (2, fam.feature_dim(arch))  # what cache-logits sizes the stored features by
    # the student of every family is rebuilt from its own arch as well
    student = fam.build_student(cfg, 3).eval()
    again = model_from_checkpoint({"arch": fam.student_arch(cfg, 3), "model": student.state_dict()})
    with torch.no_grad():
        torch.testing.assert_close(again(x), student(x))


def test_actlumos_head_follows_the_trunk_width_and_old_archs_still_rebuild():
    """The BERT FFN is 4 x the trunk's feature_dim (recorded as arch["ffn"]); an arch without it (an ActLumos
    checkpoint written before) rebuilds with the 2048 it was trained with."""
    from dlkdd.models.actlumos import actlumos_arch, actlumos_from_arch

    cfg = config_from_dict(dict(TINY, model=dict(TINY["model"], teacher="actlumos", head="bert")))
    arch = actlumos_arch(cfg, 3)
    assert arch["ffn"] == 4 * 128
    assert actlumos_from_arch(arch).head.layers[0].ffn[0].out_features == 512
    old = {k: v for k, v in arch.items() if k != "ffn"}
    assert actlumos_from_arch(old).head.layers[0].ffn[0].out_features == 2048


def test_unknown_family_is_a_config_error_listing_the_table():
    with pytest.raises(ConfigError, match="dlkdd, actlumos"):
        families.family("pose2")
    with pytest.raises(ConfigError, match="model.teacher"):
        config_from_dict({"model": {"teacher": "pose2"}})
    # a checkpoint written before families existed rebuilds as DL-KDD
    assert families.family_of_arch({}) is families.FAMILIES["dlkdd"]


def test_store_metadata_labels_the_enhancer_as_the_family_says(monkeypatch):
    """cache_logits._meta asked ``family == "dlkdd"`` and labelled every other family's enhancer "retinex"."""
    from dlkdd.pipeline.cache_logits import _feature_dim, _meta

    class GammaFamily(DlkddFamily):
        name = "gammafam"

        def feature_dim(self, arch):
            return 7

    monkeypatch.setitem(families.FAMILIES, "gammafam", GammaFamily())
    cfg = config_from_dict(TINY)
    manifest = Manifest([], ["a", "b"])
    meta = lambda arch: _meta(cfg, {"arch": arch}, "t.pt", "0" * 64, manifest, 2, [])  # noqa: E731
    assert meta({"family": "gammafam", "enhancer": {"kind": "gamma"}})["teacher_enhancer"] == "gamma"
    assert meta({"family": "gammafam", "enhancer": None})["teacher_enhancer"] is None
    assert meta({"family": "dlkdd", "enhancer": {"kind": "zerodce"}})["teacher_enhancer"] == "zerodce"
    assert meta({"family": "actlumos"})["teacher_enhancer"] == "retinex"
    assert _feature_dim({"arch": {"family": "gammafam"}}) == 7
    assert _feature_dim({"arch": {"family": "actlumos", "proj_dim": 16}}) == 16
    assert _feature_dim({"arch": {"family": "dlkdd", "backbone": "r2plus1d_tiny"}}) == 128


class _Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)

    def forward(self, x, return_features=False):
        z = self.fc(x.flatten(1))
        return (z, x.flatten(1)) if return_features else z


def test_objective_from_cfg_kd_is_ce_plus_decayed_kl():
    torch.manual_seed(0)
    cfg = config_from_dict({"kd": {"alpha": 1.5, "gamma": 0.5, "tau": 2.0, "tau2_scale": True}})
    obj = build_objective(cfg.kd)
    model = _Linear()
    batch = {"video": torch.randn(5, 6), "label": torch.tensor([0, 1, 2, 3, 0]), "teacher_logits": torch.randn(5, 4)}
    terms, logits = obj(model, batch, 2)
    z, zt = model(batch["video"]), batch["teacher_logits"]
    ce = F.cross_entropy(z, batch["label"])
    kl = (F.softmax(zt / 2, -1) * (F.log_softmax(zt / 2, -1) - F.log_softmax(z / 2, -1))).sum(1).mean() * 4
    torch.testing.assert_close(terms["task_loss"], ce)
    torch.testing.assert_close(terms["kd_loss"], kl)
    torch.testing.assert_close(terms["loss"], ce + 1.5 * 0.25 * kl)
    assert terms["alpha"] == 0.375 and terms["tau"] == 2.0 and obj.extras(2) == {"alpha": 0.375, "tau": 2.0}
    # the same numbers, bit for bit, as the class built from explicit numbers (the pipeline and bench use both)
    terms2, _ = DistillationObjective(1.5, 0.5, 2.0, True)(model, batch, 2)
    assert all(torch.equal(torch.as_tensor(terms[k]), torch.as_tensor(terms2[k])) for k in terms)
    pickle.loads(pickle.dumps(obj))  # DataLoader workers / DDP
    with pytest.raises(KeyError, match="teacher_logits"):
        obj(model, {"video": batch["video"], "label": batch["label"]}, 0)


def test_a_term_that_needs_features_gets_them():
    """A term with needs_features makes the objective call the model with return_features=True."""
    from dlkdd.train.objectives import LossTerm, _constant
    from functools import partial

    seen = {}

    def feat_term(outputs, batch):
        seen["features"] = outputs["features"]
        return outputs["features"].pow(2).mean()

    obj = TermsObjective([task_term(), LossTerm("feat_loss", feat_term, partial(_constant, 0.5), needs_features=True)])
    model = _Linear()
    batch = {"video": torch.randn(3, 6), "label": torch.tensor([0, 1, 2])}
    terms, _ = obj(model, batch, 0)
    assert seen["features"].shape == (3, 6)
    torch.testing.assert_close(terms["loss"], terms["task_loss"] + 0.5 * terms["feat_loss"])
    assert "alpha" not in terms and kd_term(1.0, 1.0, 1.0).weight_name == "alpha"


def test_a_family_name_is_compared_nowhere_but_in_its_module_and_the_table():
    """The stages ask the family object (issue 23): no ``== "pose"`` / ``== "actlumos"`` chains in dlkdd."""
    import re
    from pathlib import Path

    root = Path(families.__file__).resolve().parents[1]
    own = {"actlumos": ("models/actlumos.py",), "pose": ("pose/",)}
    for name, homes in own.items():
        pat = re.compile(rf"""[!=]=\s*["']{name}["']|["']{name}["']\s*[!=]=|in \(.*["']{name}["']""")
        hits = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") for i, line in
                enumerate(p.read_text().splitlines(), 1) if pat.search(line)
                and not str(p.relative_to(root)).startswith(homes)]
        assert not hits, f"{name!r} compared outside its module: {hits}"


def test_a_checkpoint_of_an_unknown_family_is_refused_not_rebuilt_as_dlkdd():
    """No ``family`` (old checkpoints) and ``pretrain`` rebuild as DL-KDD; a name the table lacks is one
    CheckpointError naming it (was: a DL-KDD classifier, then a misleading "weights do not fit")."""
    from dlkdd.errors import CheckpointError
    from dlkdd.models.families import FAMILIES, family_of_arch

    assert family_of_arch({}) is FAMILIES["dlkdd"]
    assert family_of_arch({"family": "pretrain"}) is FAMILIES["dlkdd"]
    assert family_of_arch({"family": "pose"}) is FAMILIES["pose"]
    with pytest.raises(CheckpointError, match="'x3d_future'"):
        family_of_arch({"family": "x3d_future"})
