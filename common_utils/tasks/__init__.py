"""Tasks: the course's datasets with their chat templates, scorers and judges.

Importing this room registers every task's dataset schema with common_utils.data, which is how
`load_course_dataset` knows how to validate each file without importing any task itself.

    extraction  person_extraction: sentence -> {"name", "age", "city"} JSON, exact-match scorer
    topic       topic_classification: as generation (Lab-1.1) and as encoder labels (BitFit, P-Tuning)
    preference  preference_format: format-following prompts and the rule-based judge (DPO, ORPO)
    alpaca      the Alpaca instruction format built from the course data (Lab-1.3)
    multiple_choice  multiple_choice: C-Eval-format benchmark, cloze and letter prompts (Lab-4.1)
    tickets     support_tickets: label-word classification as generation (Lab-4.3 capstone)
    web_corpus  a corpus with planted, labelled problems built at run time (Lab-4.2; no schema to register)
"""

from common_utils.tasks import extraction, multiple_choice, preference, tickets, topic

# Imported for their side effect: each registers its dataset schema with common_utils.data.
__all__ = ["extraction", "multiple_choice", "preference", "tickets", "topic"]
