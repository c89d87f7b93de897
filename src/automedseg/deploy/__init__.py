"""Deployment: ONNX export, INT8 quantization and a lean CPU runtime without torch.

* ``deploy.export`` (needs torch, onnx, onnxscript): each model → ``.onnx`` + a JSON card,
  accepted only when ONNX Runtime reproduces PyTorch on check inputs;
* ``deploy.quantize``: one model → INT8 with a ``Recipe`` (ONNX Runtime's quantizer);
* ``deploy.calibration`` and ``deploy.fidelity``: real planes to calibrate on, and how closely a
  candidate follows the float32 pipeline (Dice with the same boxes, automatic Dice, against
  the masks where known) and how fast;
* ``deploy.quantize_task``: ``automedseg quantize``, the recipes tried and chosen per model;
* ``deploy.model_set`` (never torch): which runtime runs (torch, onnx, int8) and the ONNX model
  set it loads;
* ``deploy.runtime`` (numpy, scipy, onnxruntime; never torch): a LiteMedSAM predictor and a
  head prompter with the PyTorch ones' interfaces, for ``pipeline.segment_image``;
* ``deploy.transforms``: LiteMedSAM's preprocessing and postprocessing in numpy.

    automedseg quantize --task polyp --out runs/quant_polyp
    automedseg segment photo.jpg --task polyp --runtime int8 --models runs/quant_polyp --out res
"""
