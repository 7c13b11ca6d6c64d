"""The pipeline, one module per stage, in the order a run goes through them::

    enhancer      (optional) zero-reference ZeroDCE training on the dark frames  -> enhancer.pt
    teacher       frozen enhancer -> R(2+1)D-BERT, CE on enhanced clips            -> teacher.pt
    cache_logits  the teacher run ONCE over every training clip, K views each     -> cache/<hash>.zarr|.h5
    student       R(2+1)D-BERT on the dark clips, CE + KL to the cached targets   -> student.pt
    evaluate      any checkpoint on a test list / videos                          -> metrics, predictions
    pretrain      (ActLumos) self-supervised student trunk, before ``student``    -> pretrain.pt

Each stage is a plain function from a :class:`dlkdd.config.Config` (plus the paths of the
previous stage's artifacts) to its artifacts. The stages import the layers below them
(:mod:`dlkdd.data`, :mod:`dlkdd.models`, :mod:`dlkdd.train`, :mod:`dlkdd.cache`, :mod:`dlkdd.losses`);
nothing below imports :mod:`dlkdd.pipeline`. The CLI (:mod:`dlkdd.commands`) and the Makefile call
these functions; ``docs/INTERNALS.md`` maps each stage to its modules and artifacts.
"""
