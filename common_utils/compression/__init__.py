"""Compression (chapter 03): quantization, pruning and distillation plumbing.

Empty until chapter 03 fills it: calibration-data collection and caching, perplexity over held-out
text, model size on disk, swapping quantized/pruned weights into a model. GPTQ, Wanda and the KD loss
themselves are written in the lab notebooks and exported to common_utils.reference.
"""
