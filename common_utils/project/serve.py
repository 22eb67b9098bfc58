"""Serve a project's adapter with the Chapter 02 server and ask it through the `openai` client.

`serve_adapter` starts `python -m common_utils.inference.server --adapter DIR` (which merges the LoRA
adapter into the base model at start-up) through Lab-2.4's `course_server`: a free loopback port, a fresh
API key, /health waited for within a bounded time, the process always stopped, also when the block raises.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Served:
    """A running server: where it listens, the key it expects, the model id it serves, its log."""

    base_url: str  # http://127.0.0.1:PORT/v1
    api_key: str
    model_id: str
    log_path: Path


@contextmanager
def serve_adapter(model_key: str, adapter_dir: str | Path, log_path: str | Path, timeout_s: float = 120,
                  threads: int = 1, max_model_len: int = 512) -> Iterator[Served]:
    """Start the course server on `adapter_dir`, yield a Served once /health answers, always stop it.
    A start that fails raises `common_utils.inference.service_client.ServiceError` with the log's tail."""
    from common_utils.inference.service_client import course_server

    if not (Path(adapter_dir) / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json: train and save the adapter first")
    args = ["--model", model_key, "--adapter", str(adapter_dir), "--max-model-len", str(max_model_len)]
    with course_server(args, api_key=secrets.token_urlsafe(24), log_path=log_path, threads=threads,
                       start_timeout_s=timeout_s) as server:
        yield Served(server.v1, server.api_key, model_key, server.log_path)


def ask_served(served: Served, conversations: list[list[dict[str, str]]], max_tokens: int,
               concurrency: int = 8, temperature: float = 0.0, seed: int | None = None) -> list[str]:
    """One chat completion per conversation through the `openai` client, `concurrency` in flight at once
    (the server batches them); replies in input order, stripped like `generate_batch`'s."""
    import concurrent.futures

    import openai

    client = openai.OpenAI(base_url=served.base_url, api_key=served.api_key, max_retries=0, timeout=120)
    model_id = client.models.list().data[0].id

    def one(messages: list[dict[str, str]]) -> str:
        extra = {} if seed is None else {"seed": seed}
        reply = client.chat.completions.create(model=model_id, messages=messages, max_tokens=max_tokens,
                                               temperature=temperature, **extra)
        return (reply.choices[0].message.content or "").strip()

    try:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, conversations))
    finally:
        client.close()
