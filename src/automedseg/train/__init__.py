"""Training on CPU: prompters (detector, shared-encoder head) and segmenter fine-tuning."""
