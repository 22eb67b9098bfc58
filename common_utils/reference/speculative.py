"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    02-Efficient_Inference_and_Serving/02-Labs/Lab-2.2-Inference_Optimization/02-Speculative_Decoding.ipynb

Edit the notebook's `#@save speculative` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.2-Inference_Optimization/02-Speculative_Decoding.ipynb ----
def probs_from_logits(logits, temperature: float = 0.0):
    """Next-token probabilities from logits; temperature 0 means greedy: a one-hot at the argmax.

    Greedy decoding is the zero-temperature limit of sampling, so one accept/reject rule serves both."""
    import torch

    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).float()
    return torch.softmax(logits.float() / temperature, dim=-1)


def speculative_step(p, q, draft_tokens, generator=None):
    """Accept or reject k drafted tokens (Leviathan et al., 2023, Algorithm 1; Chen et al., 2023), batched.

    p: (N, k+1, V) target probabilities at each draft position plus one past the last draft;
    q: (N, k, V) the draft's probabilities that `draft_tokens` (N, k) were sampled from.
    Token i is accepted with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection the
    replacement is sampled from the residual norm(max(0, p_i - q_i)); if all k are accepted, a bonus
    token comes from p_{k+1}. The emitted tokens are then distributed exactly as p.
    Returns (n_accepted (N,), next_token (N,)): emit draft_tokens[:, :n_accepted], then next_token."""
    import torch

    n, k = draft_tokens.shape
    p_x = p[:, :k].gather(-1, draft_tokens[..., None]).squeeze(-1)  # p_i(x_i)
    q_x = q.gather(-1, draft_tokens[..., None]).squeeze(-1)  # q_i(x_i)
    u = torch.rand(n, k, generator=generator, device=p.device)
    accepted = u * q_x < p_x  # u < p/q, written without dividing by q
    n_accepted = accepted.long().cumprod(dim=-1).sum(dim=-1)  # accepted tokens before the first rejection
    q_padded = torch.cat([q, torch.zeros_like(p[:, :1])], dim=1)  # no draft past the last position: residual = p
    at = n_accepted[:, None, None].expand(-1, 1, p.size(-1))
    p_at, q_at = p.gather(1, at).squeeze(1), q_padded.gather(1, at).squeeze(1)
    residual = (p_at - q_at).clamp_min(0)
    total = residual.sum(-1, keepdim=True)
    residual = torch.where(total > 0, residual / total.clamp_min(1e-30), p_at)  # p == q: any p-sample is right
    next_token = torch.multinomial(residual, 1, generator=generator).squeeze(-1)
    return n_accepted, next_token

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.2-Inference_Optimization/02-Speculative_Decoding.ipynb ----
def crop_cache(cache, length: int) -> None:
    """Keep the first `length` positions of a transformers cache (5.x's `crop` takes a negative count)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


class ModelDrafter:
    """A small causal LM that proposes k tokens one at a time, with its own KV cache."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config)

    def propose(self, ids, k: int, temperature: float = 0.0, generator=None):
        """(tokens (1, k), q (1, k, V)) for the sequence `ids` (1, L)."""
        import torch

        crop_cache(self.cache, ids.size(1) - 1)  # forget drafts of the last step; keep committed tokens
        fresh = ids[:, self.cache.get_seq_length():]  # committed tokens the draft has not seen yet
        tokens, probs = [], []
        for _ in range(k):
            logits = self.model(fresh, past_key_values=self.cache, use_cache=True).logits[:, -1]
            q = probs_from_logits(logits, temperature)
            token = q.argmax(-1) if temperature == 0 else torch.multinomial(q, 1, generator=generator).squeeze(-1)
            tokens.append(token)
            probs.append(q)
            fresh = token[:, None]
        if not tokens:
            vocab = self.model.config.vocab_size
            return ids.new_zeros(ids.size(0), 0), torch.zeros(ids.size(0), 0, vocab, device=ids.device)
        return torch.stack(tokens, 1), torch.stack(probs, 1)


class NgramDrafter:
    """Prompt lookup decoding (Saxena, 2023): copy the k tokens that followed the latest earlier
    occurrence of the sequence's last n tokens (n = max_ngram, then shorter). Deterministic: q is one-hot."""

    def __init__(self, vocab_size: int, max_ngram: int = 2):
        self.vocab_size = vocab_size
        self.max_ngram = max_ngram

    def propose(self, ids, k: int, temperature: float = 0.0, generator=None):
        import torch

        seq = ids[0].tolist()
        found: list[int] = []
        for n in range(min(self.max_ngram, len(seq) - 1), 0, -1):
            tail = seq[-n:]
            for start in range(len(seq) - n - 1, -1, -1):  # latest earlier match first
                if seq[start:start + n] == tail:
                    found = seq[start + n:start + n + k]
                    break
            if found:
                break
        tokens = torch.tensor([found], dtype=torch.long, device=ids.device).reshape(1, len(found))
        return tokens, torch.nn.functional.one_hot(tokens, self.vocab_size).float()


def speculative_generate(target, drafter, input_ids, max_new_tokens: int, k: int = 4, temperature: float = 0.0,
                         eos_token_id: int | None = None, generator=None):
    """Speculative decoding of one sequence: the drafter proposes up to k tokens, the target scores the
    last committed token plus every draft in ONE forward pass, `speculative_step` keeps a prefix and
    adds one token. Returns (new token ids, stats: target_passes, proposed, accepted)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=target.config)
    ids = input_ids.to(target.device)
    stats = {"target_passes": 0, "proposed": 0, "accepted": 0}
    with torch.inference_mode():
        if ids.size(1) > 1:  # prefill; the last prompt token is fed together with the first drafts
            target(ids[:, :-1], past_key_values=cache, use_cache=True)
            stats["target_passes"] += 1
        produced = 0
        while produced < max_new_tokens:
            draft, q = drafter.propose(ids, min(k, max_new_tokens - produced - 1), temperature, generator)
            logits = target(torch.cat([ids[:, -1:], draft], 1), past_key_values=cache, use_cache=True).logits
            stats["target_passes"] += 1
            n_acc, nxt = speculative_step(probs_from_logits(logits, temperature), q, draft, generator)
            n = int(n_acc[0])
            new = torch.cat([draft[:, :n], nxt[:, None]], 1)
            crop_cache(cache, ids.size(1) + n)  # drop the rejected drafts' keys and values
            stats["proposed"] += draft.size(1)
            stats["accepted"] += n
            if eos_token_id is not None and bool((new[0] == eos_token_id).any()):
                new = new[:, : int((new[0] == eos_token_id).nonzero()[0]) + 1]  # stop after EOS, as generate does
                ids = torch.cat([ids, new], 1)
                break
            ids = torch.cat([ids, new], 1)
            produced += new.size(1)
    return ids[0, input_ids.size(1):].tolist(), stats


def truncated_draft(model, n_layers: int):
    """A draft made of the target's first `n_layers` decoder layers (weights shared, not copied) with the
    target's embeddings, final norm and LM head: free to build, but never trained to be a draft."""
    import copy

    import torch

    config = copy.deepcopy(model.config)
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None):  # e.g. Qwen2: one attention type per layer
        config.layer_types = config.layer_types[:n_layers]
    with torch.device("meta"):  # no memory for weights that are replaced right below
        draft = type(model)(config)
    draft.model.embed_tokens = model.model.embed_tokens
    draft.model.layers = torch.nn.ModuleList(model.model.layers[:n_layers])
    draft.model.norm = model.model.norm
    draft.model.rotary_emb = model.model.rotary_emb
    draft.lm_head = model.lm_head
    draft.generation_config = copy.deepcopy(model.generation_config)
    return draft.eval()

# ---- from 02-Efficient_Inference_and_Serving/02-Labs/Lab-2.2-Inference_Optimization/02-Speculative_Decoding.ipynb ----
def greedy_acceptance(matches, k: int) -> dict[str, int]:
    """Replay greedy speculative decoding from a draft's teacher-forced matches (matches[i]: the draft's
    argmax equals the target's token i given the target's tokens before i). Each step proposes
    min(k, tokens left - 1) drafts, as `speculative_generate` does, accepts the run of consecutive
    matches, and the target adds one token. Exact for greedy decoding; no model call needed."""
    stats = {"target_passes": 0, "proposed": 0, "accepted": 0}
    i, n = 0, len(matches)
    while i < n:
        proposed = min(k, n - i - 1)
        accepted = 0
        while accepted < proposed and matches[i + accepted]:
            accepted += 1
        stats["target_passes"] += 1
        stats["proposed"] += proposed
        stats["accepted"] += accepted
        i += accepted + 1
    return stats
