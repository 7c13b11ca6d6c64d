"""Deploy a classifier without the training stack: export to ONNX / TorchScript and run it.

Only the student runs at inference (DESIGN.md); users who deploy it run ONNX Runtime or
TorchScript, not dlkdd. This package turns any dlkdd classifier checkpoint (student, baseline,
teacher with its enhancer inside) into one self-describing file and loads such files back:

- :mod:`dlkdd.deploy.spec`: what travels with an exported model (class names, clip spec, input
  contract, dynamic dimensions) and the missing-extra error;
- :mod:`dlkdd.deploy.export`: ``export_checkpoint(ckpt, out, "onnx" | "torchscript")``;
- :mod:`dlkdd.deploy.runtime`: ``load_exported(path)`` -> a callable ``clip (B,3,T,H,W) float in
  [0,1] -> logits (B,C)`` with ``.classes`` and ``.clip``, the interface ``dlkdd predict`` uses;
- :mod:`dlkdd.deploy.quantize`: ONNX Runtime int8 quantisation (dynamic, or static calibrated on
  training clips) and its agreement with the fp32 model.

The ONNX side needs the optional extra ``pip install 'dlkdd[export]'`` (onnx, onnxruntime,
onnxscript); TorchScript needs only torch.
"""
