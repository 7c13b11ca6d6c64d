"""Models: the backbone table (:mod:`.backbones`) and the family table (:mod:`.families`, protocol in
:mod:`.family`), R(2+1)D trunks (:mod:`.r2plus1d`), temporal heads (:mod:`.bert_head`), the classifier and
teacher (:mod:`.classifier`), the ActLumos teacher (:mod:`.actlumos`, :mod:`.fusion`), light enhancers
(:mod:`.enhancers`, :mod:`.zerodce`, :mod:`.zerodce_losses`), the pre-training net
(:mod:`.pretrain_net`), building from configs and checkpoints (:mod:`.build`), the weights-mismatch
report (:mod:`.weights`) and the cost profile (:mod:`.profile`). Import the submodules directly;
docs/INTERNALS.md ("Models") has the interfaces and shapes.
"""
