"""Reference code exported from the notebooks that teach it; do not edit by hand.

Taught in:
    01-Core_Training_Techniques/02-Labs/Lab-1.7-DPO_Alignment/03-DPO_Training.ipynb
    01-Core_Training_Techniques/02-Labs/Lab-1.8-ORPO_Alignment/01-Setup.ipynb

Edit the notebook's `#@save preference_losses` cell, then run `python scripts/export_reference.py`.
"""

from __future__ import annotations


# ---- from 01-Core_Training_Techniques/02-Labs/Lab-1.7-DPO_Alignment/03-DPO_Training.ipynb ----
def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float):
    """The DPO loss of Rafailov et al. (2023), eq. 7: returns (mean loss, chosen rewards, rejected rewards).

    Each argument holds one log pi(y|x) per preference pair: the sum of the reply's token log-probs under the
    policy being trained or under the frozen reference model. The implicit reward of a reply is
    r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)); the loss is -log sigmoid(r(x, y_chosen) - r(x, y_rejected)),
    a logistic loss on the reward margin, averaged over pairs. The rewards come back detached, for logging."""
    import torch.nn.functional as F

    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # r(x, y_w)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # r(x, y_l)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)  # -log P(y_w preferred over y_l), one per pair
    return losses.mean(), chosen_rewards.detach(), rejected_rewards.detach()


def chosen_nll(policy_chosen_logps, chosen_token_count):
    """The NLL term added to DPO (TRL loss_type "sft"): minus the chosen replies' summed token log-probs
    over all chosen tokens of the batch, i.e. the mean NLL per chosen token. It keeps pi(y_w|x) from
    falling while DPO pushes pi(y_l|x) down (Pang et al., 2024, Iterative Reasoning Preference Optimization)."""
    return -policy_chosen_logps.sum() / chosen_token_count

# ---- from 01-Core_Training_Techniques/02-Labs/Lab-1.8-ORPO_Alignment/01-Setup.ipynb ----
def log1mexp(x):
    """log(1 - exp(x)) for x < 0, accurate at both ends (Maechler, 2012): near 0, 1 - exp(x) cancels, so use
    log(-expm1(x)); far below 0, exp(x) is tiny, so use log1p(-exp(x)). They switch at x = -log 2."""
    import math

    import torch

    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(chosen_nll, chosen_mean_logps, rejected_mean_logps, lam: float):
    """The ORPO loss of Hong et al. (2024): returns (loss, mean log odds ratio).

    chosen_nll: the SFT loss (negative log-likelihood) of the chosen sequences. *_mean_logps: one mean token
    log-prob per reply, so P(y|x) = exp(mean) and log odds(y|x) = log P - log(1 - P). The loss is
    chosen_nll + lam * -log sigmoid(log odds(y_chosen) - log odds(y_rejected)), averaged over pairs:
    no reference model anywhere. The log odds ratio comes back detached, for logging."""
    import torch.nn.functional as F

    log_odds_chosen = chosen_mean_logps - log1mexp(chosen_mean_logps)
    log_odds_rejected = rejected_mean_logps - log1mexp(rejected_mean_logps)
    log_odds_ratio = log_odds_chosen - log_odds_rejected
    odds_ratio_loss = -F.logsigmoid(log_odds_ratio).mean()  # L_OR
    return chosen_nll + lam * odds_ratio_loss, log_odds_ratio.mean().detach()
