"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.6-Triton_Inference_Server/04-Production.ipynb

Edit the notebook's `#@save triton_repository` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.6-Triton_Inference_Server/04-Production.ipynb ----
import re
from pathlib import Path

TENSORS = {"input": [("prompt", "TYPE_STRING", [1]), ("max_tokens", "TYPE_INT32", [1])],
           "output": [("text", "TYPE_STRING", [1]), ("completion_tokens", "TYPE_INT32", [1])]}

MODEL_PY = """# Triton Python backend for a causal LM (written by Lab-2.6 04-Production; not run by the course).
import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from transformers import AutoModelForCausalLM, AutoTokenizer


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        torch.set_num_threads(int(params.get("threads", {}).get("string_value", "1")))
        model_dir = params["model_dir"]["string_value"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def execute(self, requests):
        # the dynamic batcher hands over several requests at once: one left-padded generate for all of them
        prompts = [pb_utils.get_input_tensor_by_name(r, "prompt").as_numpy()[0, 0].decode("utf-8") for r in requests]
        budgets = [int(pb_utils.get_input_tensor_by_name(r, "max_tokens").as_numpy()[0, 0]) for r in requests]
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True) for p in prompts]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = self.model.generate(**encoded, max_new_tokens=max(budgets), do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id)
        responses = []
        for row, budget in zip(output[:, encoded["input_ids"].shape[1]:], budgets):
            row = row[:budget].tolist()
            if self.tokenizer.eos_token_id in row:
                row = row[:row.index(self.tokenizer.eos_token_id) + 1]
            text = self.tokenizer.decode(row, skip_special_tokens=True).strip().encode("utf-8")
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("text", np.array([[text]], dtype=object)),
                pb_utils.Tensor("completion_tokens", np.array([[len(row)]], dtype=np.int32))]))
        return responses

    def finalize(self):
        self.model = None
"""


def config_pbtxt(name: str, model_dir: str, max_batch: int, instances: int = 1, queue_delay_us: int = 20000,
                 kind: str = "KIND_CPU") -> str:
    """The config.pbtxt (protobuf text format) of the Python-backend LLM."""
    def tensors(section: str) -> str:
        rows = [f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}' for n, t, d in TENSORS[section]]
        return f"{section} [\n" + ",\n".join(rows) + "\n]\n"

    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n' + tensors("input") + tensors("output")
            + f"instance_group [ {{ count: {instances} kind: {kind} }} ]\n"
            + f"dynamic_batching {{\n  preferred_batch_size: [ {max_batch} ]\n"
            + f"  max_queue_delay_microseconds: {queue_delay_us}\n}}\n"
            + f'parameters: {{ key: "model_dir" value: {{ string_value: "{model_dir}" }} }}\n'
            + 'parameters: { key: "threads" value: { string_value: "1" } }\n')


def write_model_repository(root: str | Path, name: str, model_dir: str, max_batch: int, instances: int = 1,
                           queue_delay_us: int = 20000) -> Path:
    """<root>/<name>/config.pbtxt and <root>/<name>/1/model.py; returns the model's folder."""
    folder = Path(root) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config_pbtxt(name, model_dir, max_batch, instances, queue_delay_us))
    (folder / "1" / "model.py").write_text(MODEL_PY)
    return folder


def _block(text: str, key: str, open_char: str) -> str | None:
    """The text between `key <open_char>` and its matching closing bracket (None when `key` is absent)."""
    match = re.search(rf"^\s*{key}\s*:?\s*\{open_char}", text, re.MULTILINE)
    if not match:
        return None
    close_char = {"[": "]", "{": "}"}[open_char]
    depth = 0
    for i in range(match.end() - 1, len(text)):
        depth += {open_char: 1, close_char: -1}.get(text[i], 0)
        if depth == 0:
            return text[match.end():i]
    raise ValueError(f"config.pbtxt: `{key}` opens with {open_char!r} but never closes")


def check_model_config(text: str) -> dict:
    """A structure check of a config.pbtxt (no protobuf schema needed): balanced brackets, the required
    fields, known data types and kinds, dynamic batching only with max_batch_size > 0. Returns the fields
    in the shape of Triton's JSON model config; raises ValueError naming the problem."""
    stripped = re.sub(r'"[^"]*"|#[^\n]*', "", text)  # strings and comments cannot unbalance anything
    for open_char, close_char in ("{}", "[]"):
        if stripped.count(open_char) != stripped.count(close_char):
            raise ValueError(f"config.pbtxt: unbalanced {open_char}{close_char}")
    config: dict = {}
    for key, pattern in (("name", r'^name:\s*"([^"]+)"'), ("backend", r'^backend:\s*"([^"]+)"'),
                         ("max_batch_size", r"^max_batch_size:\s*(\d+)")):
        match = re.search(pattern, text, re.MULTILINE)
        if not match:
            raise ValueError(f"config.pbtxt: missing top-level `{key}`")
        config[key] = int(match.group(1)) if key == "max_batch_size" else match.group(1)
    for section in ("input", "output"):
        block = _block(text, section, "[")
        if block is None:
            raise ValueError(f"config.pbtxt: missing `{section} [ ... ]`")
        config[section] = [{"name": n, "data_type": t, "dims": [int(d) for d in dims.replace(",", " ").split()]}
                           for n, t, dims in re.findall(r'name:\s*"([^"]+)"\s*data_type:\s*(\w+)\s*dims:\s*\[([^\]]*)\]', block)]
        unknown = [t["data_type"] for t in config[section] if t["data_type"] not in
                   {"TYPE_STRING", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_BF16", "TYPE_BOOL", "TYPE_UINT8"}]
        if not config[section] or unknown:
            raise ValueError(f"config.pbtxt: `{section}` has no tensors or unknown data types {unknown}")
    groups = _block(text, "instance_group", "[") or ""
    config["instance_group"] = [{"count": int(c), "kind": k} for c, k in re.findall(r"count:\s*(\d+)\s*kind:\s*(\w+)", groups)]
    if any(g["kind"] not in {"KIND_CPU", "KIND_GPU", "KIND_AUTO", "KIND_MODEL"} for g in config["instance_group"]):
        raise ValueError(f"config.pbtxt: unknown instance kind in {config['instance_group']}")
    batcher = _block(text, "dynamic_batching", "{")
    config["dynamic_batching"] = None
    if batcher is not None:
        if config["max_batch_size"] == 0:
            raise ValueError("config.pbtxt: dynamic_batching needs max_batch_size > 0")
        delay = re.search(r"max_queue_delay_microseconds:\s*(\d+)", batcher)
        preferred = re.search(r"preferred_batch_size:\s*\[([^\]]*)\]", batcher)
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(delay.group(1)) if delay else 0,
            "preferred_batch_size": [int(p) for p in preferred.group(1).replace(",", " ").split()] if preferred else []}
        if any(p > config["max_batch_size"] for p in config["dynamic_batching"]["preferred_batch_size"]):
            raise ValueError("config.pbtxt: a preferred_batch_size exceeds max_batch_size")
    config["parameters"] = dict(re.findall(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text))
    return config
