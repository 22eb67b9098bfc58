"""Inference (chapter 02): decoding loops, KV caches, speculative decoding, batching engines, servers.

Empty until chapter 02 fills it. What goes here is plumbing that two or more labs reuse (a request
trace generator, latency statistics, an engine's process wrapper). What a lab teaches — a KV cache, a
sampler, a paged allocator — is written in its notebook and exported to common_utils.reference.
Batched greedy generation for scoring already lives in common_utils.core.generation.
"""
