"""Deployment: ONNX export of the pipeline's models and a lean CPU runtime without torch.

* ``deploy.export`` (needs torch, onnx, onnxscript): each model → ``.onnx`` + a JSON card,
  accepted only when ONNX Runtime reproduces PyTorch on check inputs;
* ``deploy.runtime`` (numpy, scipy, onnxruntime; never torch): a LiteMedSAM predictor and a
  head prompter with the PyTorch ones' interfaces, for ``pipeline.segment_image``;
* ``deploy.transforms``: LiteMedSAM's preprocessing and postprocessing in numpy.

    python scripts/export_onnx.py --task polyp --out runs/onnx_polyp

    from automedseg.deploy.runtime import load_onnx_head_prompter, load_onnx_predictor
    predictor = load_onnx_predictor("runs/onnx_polyp/image_encoder.json",
                                    "runs/onnx_polyp/mask_decoder.json")
    prompter = load_onnx_head_prompter("runs/onnx_polyp/prompter.json")
    result = segment_image(image, prompter, predictor)
"""
