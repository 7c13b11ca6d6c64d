"""Training: the generic engine (:mod:`.engine`), checkpoints (:mod:`.checkpoint`), AdamW and
schedules (:mod:`.optim`), the epoch log (:mod:`.logger`), DDP helpers (:mod:`.distributed`) and
ready-made loss functions (:mod:`.objectives`). Import the submodules directly; this package
imports nothing heavy."""
