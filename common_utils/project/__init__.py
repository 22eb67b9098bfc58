"""A fine-tuning project from definition to published model: the capstone's workflow (Lab-4.3).

The top room: it may import every other room. Each module is one step of the project checklist.

    definition  task_definition.yaml: labels, input/output spec, instruction, metric, acceptance threshold;
                `init_project` scaffolds a new project folder (`python -m common_utils project init DIR`)
    validate    the project's JSONL checked against its definition: file:line errors, unknown labels,
                duplicate ids, empty text, class imbalance (`python -m common_utils project validate DIR`)
    train       chat formatting and the LoRA recipe (the course's SFT wrappers) with `ensure`
    report      the evaluation report: metrics, error samples, pass/fail, confusion-matrix plot, YAML
    serve       the Chapter 02 server started on a saved adapter, queried with the `openai` client
    card        the model card (huggingface_hub ModelCard) and the hub-ready folder
"""
