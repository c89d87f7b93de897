"""Deployment: ONNX export and INT8 quantization for the lean CPU runtime (``runtime``).

* ``deploy.export`` (needs torch, onnx, onnxscript): each model → ``.onnx`` + a JSON card,
  accepted only when ONNX Runtime reproduces PyTorch on check inputs;
* ``deploy.quantize``: one model → INT8 with a ``Recipe`` (ONNX Runtime's quantizer);
* ``deploy.calibration`` and ``deploy.fidelity``: real planes to calibrate on, and how closely a
  candidate follows the float32 pipeline (Dice with the same boxes, automatic Dice, against
  the masks where known) and how fast;
* ``deploy.quantize_task``: ``automedseg quantize``, the recipes tried and chosen per model;
* the models it writes run on ``automedseg.runtime`` (ONNX Runtime, never torch).

    automedseg quantize --task polyp --out runs/quant_polyp
    automedseg segment photo.jpg --task polyp --runtime int8 --model-set runs/quant_polyp --out res
"""
