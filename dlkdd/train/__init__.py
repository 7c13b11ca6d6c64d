"""Training: one run of a stage (:mod:`.fit`), the epoch and evaluation engine (:mod:`.engine`),
the objectives (:mod:`.objectives`), checkpoints and resume (:mod:`.checkpoint`), AdamW and
schedules (:mod:`.optim`), the epoch log (:mod:`.logger`) and DDP helpers (:mod:`.distributed`).
Import the submodules directly; this package imports nothing heavy."""
