"""Serve a project's adapter with the Chapter 02 server and ask it through the `openai` client.

`serve_adapter` starts `python -m common_utils.inference.server --adapter DIR` (which merges the LoRA
adapter into the base model at start-up) on a free loopback port with a fresh API key, waits for
/health within a bounded time, and always stops the process, also when the block raises.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class ServerStartError(RuntimeError):
    """The server exited or did not become healthy in time; the message carries its log tail."""


@dataclass(frozen=True)
class Served:
    """A running server: where it listens, the key it expects, the model id it serves, its log."""

    base_url: str  # http://127.0.0.1:PORT/v1
    api_key: str
    model_id: str
    log_path: Path


def server_command(model_key: str, adapter_dir: str | Path, port: int, threads: int = 1,
                   max_model_len: int = 512) -> list[str]:
    """The command line that serves the base model with the adapter merged in (loopback only)."""
    return [sys.executable, "-m", "common_utils.inference.server", "--model", model_key, "--adapter",
            str(adapter_dir), "--port", str(port), "--threads", str(threads), "--max-model-len", str(max_model_len)]


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def serve_adapter(model_key: str, adapter_dir: str | Path, log_path: str | Path, timeout_s: float = 120,
                  threads: int = 1) -> Iterator[Served]:
    """Start the course server on `adapter_dir`, yield a Served once /health answers, always stop it."""
    from common_utils.core.processes import free_port, tail

    if not (Path(adapter_dir) / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter_dir} holds no adapter_config.json: train and save the adapter first")
    port, key = free_port(), secrets.token_urlsafe(24)
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COURSE_API_KEY": key, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(server_command(model_key, adapter_dir, port, threads), stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if process.poll() is not None:
                raise ServerStartError(f"the server exited with code {process.returncode}:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"the server was not healthy after {timeout_s:.0f} s (raise "
                                       f"server_start_timeout_s on a slow machine):\n{tail(log_path)}")
            time.sleep(0.25)
        yield Served(f"http://127.0.0.1:{port}/v1", key, model_key, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


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
