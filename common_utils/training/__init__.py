"""Training: thin wrappers over transformers/TRL with course defaults, and the arithmetic of memory.

    sft          SFTTrainer recipes, resumable runs, loss history
    peft_lab     the stages PEFT Labs 01-05 share: baseline, side-by-side scores, logit gaps, latency
    preference   DPO/ORPO trainers and recipes (the losses are taught in Lab-1.7/1.8)
    classify     encoder sequence classification for the NLU PEFT labs
    distributed  what torchrun-launched scripts share (process groups, checkpoints, data blocks)
    deepspeed    ZeRO plans, the one DeepSpeed config builder, per-rank measured bytes, accelerate
    memory       the one bytes-per-parameter table, activation meters, training-memory estimates
    tiny_lm      the tiny character LM Lab-1.6 measures MQA/GQA on (its attention is taught: reference.gqa)
"""
