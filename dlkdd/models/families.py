"""The family table: ``model.teacher`` / a checkpoint's ``arch["family"]`` -> family object.

A family (:class:`dlkdd.models.family.Family`) decides a stage's model, checkpoint ``arch``,
rebuild, objective, input dataset and what a logit store records of its teacher. Every stage asks
this table (:mod:`dlkdd.models.build`, :mod:`dlkdd.pipeline.teacher`, :mod:`dlkdd.pipeline.student`,
:mod:`dlkdd.pipeline.cache_logits`, :mod:`dlkdd.pipeline.evaluate`, :mod:`dlkdd.deploy.export`) and config
validation (``model.teacher``) lists its names. ``pose`` (:mod:`dlkdd.pose.family`): a family whose input
is keypoints from pose stores, not decoded video.

Adding a family: a module with its model and a :class:`~dlkdd.models.family.Family` subclass, and
one entry here.
"""
from __future__ import annotations

from typing import Any, Mapping

from dlkdd.models.actlumos import ACTLUMOS
from dlkdd.models.family import DlkddFamily, Family
from dlkdd.pose.family import POSE

__all__ = ["FAMILIES", "family", "family_of_arch"]

FAMILIES: dict[str, Family] = {
    "dlkdd": DlkddFamily(),
    "actlumos": ACTLUMOS,
    "pose": POSE,
}


def family(name: str) -> Family:
    """The family ``name`` (``model.teacher``); unknown -> ConfigError listing the table."""
    from dlkdd.config_sections import table_entry

    return table_entry(FAMILIES, name, "model.teacher", "model family")


def family_of_arch(arch: Mapping[str, Any]) -> Family:
    """The family that rebuilds a checkpoint of ``arch``. A checkpoint without ``family`` (written before
    families existed) or of the ``pretrain`` stage (a classifier arch) is DL-KDD's, as before; any other
    name this table lacks (a newer dlkdd's family, a typo) is a :class:`~dlkdd.errors.CheckpointError`
    rather than a DL-KDD classifier that its weights do not fit."""
    name = str(arch.get("family", "dlkdd"))
    if name in FAMILIES:
        return FAMILIES[name]
    if name == "pretrain":
        return FAMILIES["dlkdd"]
    from dlkdd.errors import CheckpointError

    raise CheckpointError(f"the checkpoint is of model family {name!r}, which this dlkdd does not know (it knows "
                          f"{', '.join(FAMILIES)}): use the dlkdd version that wrote it")
