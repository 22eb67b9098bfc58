"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.6-Triton_Inference_Server/01-Model_Repository_and_First_Inference.ipynb
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.6-Triton_Inference_Server/02-Dynamic_Batching.ipynb
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.6-Triton_Inference_Server/03-Clients_and_Metrics.ipynb

Edit the notebook's `#@save triton_client` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.6-Triton_Inference_Server/01-Model_Repository_and_First_Inference.ipynb ----
import numpy as np


def client_module(protocol: str):
    """`tritonclient.http` or `tritonclient.grpc`: the same API over two transports."""
    if protocol == "http":
        import tritonclient.http as module
    elif protocol == "grpc":
        import tritonclient.grpc as module
    else:
        raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
    return module


def make_client(protocol: str, url: str, timeout_s: float = 120.0):
    """A client for `host:port` (no scheme). HTTP timeouts are set on the client, gRPC ones per call."""
    module = client_module(protocol)
    if protocol == "http":
        return module.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
    return module.InferenceServerClient(url)


def llm_inputs(protocol: str, prompt: str, max_tokens: int) -> list:
    """The two input tensors of the `llm` model for one request: BYTES [1, 1] and INT32 [1, 1]."""
    module = client_module(protocol)
    text = module.InferInput("prompt", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode("utf-8")]], dtype=object))
    budget = module.InferInput("max_tokens", [1, 1], "INT32")
    budget.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
    return [text, budget]


def triton_generate(client, protocol: str, prompt: str, max_tokens: int, model: str = "llm",
                    timeout_s: float = 120.0) -> tuple[str, int]:
    """One greedy reply and its token count from the served model."""
    kwargs = {"client_timeout": timeout_s} if protocol == "grpc" else {}
    result = client.infer(model, llm_inputs(protocol, prompt, max_tokens), **kwargs)
    return result.as_numpy("text")[0, 0].decode("utf-8"), int(result.as_numpy("completion_tokens")[0, 0])


def model_config(client, protocol: str, model: str = "llm") -> dict:
    """The model configuration the server runs (config.pbtxt as JSON), the same dict for both protocols."""
    if protocol == "grpc":
        return client.get_model_config(model, as_json=True)["config"]
    return client.get_model_config(model)

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.6-Triton_Inference_Server/02-Dynamic_Batching.ipynb ----
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field


@dataclass
class TritonRun:
    """Every request of one `run_triton_clients` call: latency, tokens and text per request, and the wall time."""

    concurrency: int
    latencies_s: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, float]:
        """One table row: requests/s, generated tokens/s (all clients together), latency p50/p95."""
        ordered = sorted(self.latencies_s)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]  # nearest rank
        return {"concurrency": self.concurrency, "requests": len(ordered), "tokens": sum(self.tokens),
                "wall_s": self.wall_s, "requests_per_s": len(ordered) / self.wall_s,
                "tokens_per_s": sum(self.tokens) / self.wall_s, "p50_s": statistics.median(ordered), "p95_s": p95}


def run_triton_clients(protocol: str, url: str, prompts: list[str], concurrency: int, max_tokens: int,
                       timeout_s: float = 300.0) -> TritonRun:
    """Send each prompt once to the `llm` model, at most `concurrency` in flight; bounded by len(prompts)
    requests and `timeout_s` seconds (TimeoutError after that; requests not started are cancelled)."""
    from common_utils.reference.triton_client import make_client, triton_generate

    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not url.startswith("127.0.0.1:"):
        raise ValueError(f"loopback servers only (127.0.0.1:PORT), got {url!r}")
    local = threading.local()

    def one(prompt: str) -> tuple[float, str, int]:
        if not hasattr(local, "client"):
            local.client = make_client(protocol, url, timeout_s)
        start = time.perf_counter()
        text, tokens = triton_generate(local.client, protocol, prompt, max_tokens, timeout_s=timeout_s)
        return time.perf_counter() - start, text, tokens

    run = TritonRun(concurrency)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="triton-client") as pool:
        futures = [pool.submit(one, p) for p in prompts]
        done, pending = wait(futures, timeout=timeout_s)
        if pending:
            for future in pending:
                future.cancel()
            raise TimeoutError(f"{len(pending)} of {len(prompts)} requests did not finish within {timeout_s:.0f} s")
    run.wall_s = time.perf_counter() - start
    for future in futures:
        latency, text, tokens = future.result()
        run.latencies_s.append(latency)
        run.texts.append(text)
        run.tokens.append(tokens)
    return run


COUNTERS = {"success": "nv_inference_request_success", "inferences": "nv_inference_count",
            "executions": "nv_inference_exec_count", "queue_us": "nv_inference_queue_duration_us",
            "compute_us": "nv_inference_compute_infer_duration_us", "request_us": "nv_inference_request_duration_us"}


def triton_counters(families: dict, model: str = "llm") -> dict[str, float]:
    """Triton's per-model counters from a parsed /metrics (service_client.parse_metrics / scrape_metrics):
    requests that succeeded, inferences (batch rows), executions (model calls = batches), and the
    cumulative microseconds spent queued, computing, and in total."""
    def total(name: str) -> float:  # the family's samples for this model (the parser names them `<name>_total`)
        family = families.get(name)
        return sum(s.value for s in family.samples if s.labels.get("model") == model) if family else 0.0

    return {key: total(name) for key, name in COUNTERS.items()}


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What one run added to the counters, plus per-request averages and the mean executed batch size."""
    delta = {key: after[key] - before[key] for key in COUNTERS}
    requests = max(delta["success"], 1.0)
    delta["mean_batch"] = delta["inferences"] / max(delta["executions"], 1.0)
    delta["queue_ms_per_request"] = delta["queue_us"] / requests / 1000
    delta["compute_ms_per_request"] = delta["compute_us"] / requests / 1000
    return delta

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.6-Triton_Inference_Server/03-Clients_and_Metrics.ipynb ----
def stream_reply(url: str, prompt: str, max_tokens: int, model: str = "llm_stream",
                 timeout_s: float = 120.0) -> list[tuple[float, str]]:
    """Stream one reply from a decoupled model over gRPC: (seconds since the request was sent, text piece)
    for every response until the one flagged `final`; bounded by `timeout_s`."""
    import queue
    import time

    import numpy as np
    import tritonclient.grpc as grpc

    responses: queue.Queue = queue.Queue()
    client = grpc.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: responses.put((time.perf_counter(), result, error)))
    text = grpc.InferInput("prompt", [1], "BYTES")  # batching=False: no batch dimension
    text.set_data_from_numpy(np.array([prompt.encode("utf-8")], dtype=object))
    budget = grpc.InferInput("max_tokens", [1], "INT32")
    budget.set_data_from_numpy(np.array([max_tokens], dtype=np.int32))
    pieces: list[tuple[float, str]] = []
    try:
        start = time.perf_counter()
        client.async_stream_infer(model, [text, budget])
        while True:
            left = timeout_s - (time.perf_counter() - start)
            try:
                arrived, result, error = responses.get(timeout=max(left, 0.001))
            except queue.Empty:
                raise TimeoutError(f"no final response within {timeout_s:.0f} s") from None
            if error is not None:
                raise RuntimeError(f"the stream failed: {error}")
            pieces.append((arrived - start, result.as_numpy("token")[0].decode("utf-8")))
            if bool(result.as_numpy("final")[0]):
                return pieces
    finally:
        client.stop_stream()
        client.close()
