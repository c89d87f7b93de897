"""Running LiteMedSAM and the head prompter without torch: ONNX Runtime sessions checked against
their cards (``onnx``), numpy pre- and postprocessing (``transforms``), and which runtime a
task uses and the model set it loads (``model_set``). Nothing here imports torch."""
