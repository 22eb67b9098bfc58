"""A causal LM (SmolLM2) served by Triton Inference Server through PyTriton, on the CPU (Lab-2.6).

Run with the PyTriton venv's interpreter (`.venv-triton/bin/python`, numpy<2), normally through
`common_utils.inference.engines.pytriton_server`, which also sets LD_LIBRARY_PATH (see below):

    python triton_llm_server.py MODEL_DIR --max-batch 4 --http-port 8000 --grpc-port 8001 --metrics-port 8002

One model, `llm`, with the inputs and outputs a Triton `config.pbtxt` would declare:

    prompt             BYTES [1]   the user message (the chat template is applied here)
    max_tokens         INT32 [1]   new tokens to generate (greedy)
    text               BYTES [1]   the reply
    completion_tokens  INT32 [1]   tokens generated for this request (up to and including EOS)

`max_batch_size` comes from argv: with > 1, Triton's dynamic batcher hands `infer` up to that many requests
at once (the `@batch` decorator stacks them along axis 0), and one left-padded `generate` serves them all.
`--max-batch 1` is the ablation: every request is its own `generate`.

With `--stream` a second model, `llm_stream`, is bound in decoupled mode (one response per generated token,
received with the gRPC streaming client); it does not batch.

This script is self-contained (it does not import common_utils: the venv does not have it).
"""

from __future__ import annotations

import argparse
import logging
import signal

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_NAME = "llm"
STREAM_MODEL_NAME = "llm_stream"  # decoupled: one response per token (--stream)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", help="local Hugging Face model folder (model_path(...) in the notebook)")
    parser.add_argument("--max-batch", type=int, default=4, help="Triton max_batch_size (1 = batching off)")
    parser.add_argument("--queue-delay-us", type=int, default=2000,
                        help="dynamic batcher max_queue_delay_microseconds: how long a request may wait for others")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the model function")
    parser.add_argument("--max-tokens-limit", type=int, default=256)
    parser.add_argument("--stream", action="store_true", help="also bind `llm_stream`, a decoupled model")
    return parser.parse_args(argv)


def make_infer(model, tokenizer, max_tokens_limit: int):
    """The model function Triton calls: numpy arrays in (batch first), numpy arrays out."""

    @batch
    def infer(prompt: np.ndarray, max_tokens: np.ndarray) -> dict[str, np.ndarray]:
        messages = [[{"role": "user", "content": p[0].decode("utf-8")}] for p in prompt]
        budgets = [min(int(m[0]), max_tokens_limit) for m in max_tokens]
        texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(**encoded, max_new_tokens=max(budgets), do_sample=False, use_cache=True,
                                    pad_token_id=tokenizer.pad_token_id)
        replies, counts = [], []
        for row, budget in zip(output[:, encoded["input_ids"].shape[1]:], budgets):
            row = row[:budget].tolist()
            if tokenizer.eos_token_id in row:  # keep EOS itself, drop the padding generated after it
                row = row[:row.index(tokenizer.eos_token_id) + 1]
            counts.append(len(row))
            replies.append(tokenizer.decode(row, skip_special_tokens=True).strip().encode("utf-8"))
        return {"text": np.array(replies, dtype=object).reshape(-1, 1),
                "completion_tokens": np.array(counts, dtype=np.int32).reshape(-1, 1)}

    return infer


def make_stream_infer(model, tokenizer, max_tokens_limit: int):
    """A decoupled model function: a generator, one response per new token (Triton sends each as it comes,
    over gRPC streaming), then the last response carries `final`. One request at a time (no batching)."""

    def infer_stream(requests):
        for request in requests:  # PyTriton passes a list of requests; batching=False -> one
            prompt = request["prompt"][0].decode("utf-8")
            budget = min(int(request["max_tokens"][0]), max_tokens_limit)
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            generated, sent, past, step_input = [], "", None, ids
            with torch.inference_mode():
                for _ in range(budget):
                    out = model(input_ids=step_input, past_key_values=past, use_cache=True)
                    past, next_id = out.past_key_values, int(out.logits[0, -1].argmax())
                    generated.append(next_id)
                    if next_id == tokenizer.eos_token_id:
                        break
                    decoded = tokenizer.decode(generated, skip_special_tokens=True)
                    if decoded.endswith("\ufffd"):  # half of a multi-byte character: wait for the next token
                        step_input = torch.tensor([[next_id]])
                        continue
                    piece, sent = decoded[len(sent):], decoded
                    yield [{"token": np.array([piece.encode("utf-8")], dtype=object),
                            "final": np.array([False])}]
                    step_input = torch.tensor([[next_id]])
            yield [{"token": np.array([b""], dtype=object), "final": np.array([True])}]

    return infer_stream


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM (what a process manager sends) -> KeyboardInterrupt, which `triton.serve()` turns into a clean
    # stop of tritonserver and its Python-backend stub; without it they outlive this script.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port, grpc_address="127.0.0.1",
                          grpc_port=args.grpc_port, metrics_address="127.0.0.1", metrics_port=args.metrics_port,
                          exit_timeout_secs=5)  # default 30 s: every stop would wait that long
    # Bind first, then serve(): Triton starts with every model in its repository, so /v2/health/ready answers
    # only when all of them are loaded (`with Triton() as t` would start it before the binds).
    triton = Triton(config=config)
    try:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=make_infer(model, tokenizer, args.max_tokens_limit),
            inputs=[Tensor(name="prompt", dtype=bytes, shape=(1,)),
                    Tensor(name="max_tokens", dtype=np.int32, shape=(1,))],
            outputs=[Tensor(name="text", dtype=bytes, shape=(1,)),
                     Tensor(name="completion_tokens", dtype=np.int32, shape=(1,))],
            config=ModelConfig(max_batch_size=args.max_batch,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)),
            strict=True,
        )
        if args.stream:
            triton.bind(
                model_name=STREAM_MODEL_NAME,
                infer_func=make_stream_infer(model, tokenizer, args.max_tokens_limit),
                inputs=[Tensor(name="prompt", dtype=bytes, shape=(1,)),
                        Tensor(name="max_tokens", dtype=np.int32, shape=(1,))],
                outputs=[Tensor(name="token", dtype=bytes, shape=(1,)), Tensor(name="final", dtype=np.bool_, shape=(1,))],
                config=ModelConfig(batching=False, decoupled=True),
                strict=True,
            )
        logging.getLogger("triton_llm_server").info("serving %s (max_batch_size=%d, %d torch threads)",
                                                     MODEL_NAME, args.max_batch, args.threads)
        triton.serve()  # blocks; SIGINT/SIGTERM -> stop tritonserver and clean its workspace
    finally:
        triton.stop()
        logging.getLogger("triton_llm_server").info("stopped: tritonserver and its workspace are gone")


if __name__ == "__main__":
    main()
