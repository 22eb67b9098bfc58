"""Inference (chapter 02): the plumbing that the decoding, optimization and batching labs share.

    prompts    chat prompts of an exact token length (prefill/decode timing at a chosen length)
    timing     interleaved timing of several candidates and the median of paired speed ratios
    benchmark  forward-call counting, token agreement and quality reports for the optimization table
    trace      seeded Poisson request traces from the course data, latency percentiles, serving summaries
    workload   one lab's trace plus its reference answers (rebuilt with `ensure` when missing)
    server     the course's OpenAI-compatible server (FastAPI; `make serve`): routes, auth, limits, logs
    server_engine    its one generation worker: continuous batching on Lab-2.3's engine, cancel flags
    server_protocol  OpenAI request/response/chunk shapes and errors, token-to-text assembly
    server_metrics   its Prometheus registry (TTFT, inter-token latency, tokens, queue depth)
    service_client   the client side of a served model: start/stop the course server on a free loopback
                     port, concurrent timed `openai` streams, /metrics scraping (Lab-2.4, tests, Lab-4.3)

What a lab teaches — a KV cache, samplers, speculative decoding, a paged allocator and scheduler — is
written in its notebooks and exported to common_utils.reference. Batched greedy generation for scoring
lives in common_utils.core.generation.
"""
