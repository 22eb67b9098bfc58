"""DPO and ORPO losses, written out. Taught in Lab-1.7/03-DPO_Training (DPO) and Lab-1.8/01-Setup (ORPO).

TEMPORARY HOME: these move into the notebooks' `#@save` cells and are regenerated here by
`scripts/export_reference.py`.
"""

from __future__ import annotations


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta: float):
    """The DPO loss of Rafailov et al. (2023), written out: returns (mean loss, chosen rewards, rejected rewards).

    Implicit reward r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)); the loss is
    -log sigmoid(r(x, y_chosen) - r(x, y_rejected)), averaged over pairs."""
    import torch.nn.functional as F

    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    return loss, chosen_rewards.detach(), rejected_rewards.detach()




def log1mexp(x):
    """log(1 - exp(x)) for x < 0, stable at both ends (Maechler 2012: switch at -log 2)."""
    import torch

    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(chosen_nll, chosen_mean_logps, rejected_mean_logps, lam: float):
    """The ORPO loss of Hong et al. (2024), written out: returns (loss, mean log odds ratio).

    odds(y|x) = P / (1 - P) with P = exp(mean token log-prob of y). The loss is the SFT loss on the chosen
    reply plus lam * -log sigmoid(log odds(y_chosen) - log odds(y_rejected)): no reference model at all."""
    import torch.nn.functional as F

    log_odds = (chosen_mean_logps - rejected_mean_logps) - (
        log1mexp(chosen_mean_logps) - log1mexp(rejected_mean_logps))
    return chosen_nll - lam * F.logsigmoid(log_odds).mean(), log_odds.mean().detach()
