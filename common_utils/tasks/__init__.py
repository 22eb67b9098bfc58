"""Tasks: the course's datasets with their chat templates, scorers and judges.

Importing this room registers every task's dataset schema with common_utils.data, which is how
`load_course_dataset` knows how to validate each file without importing any task itself.

    extraction  person_extraction: sentence -> {"name", "age", "city"} JSON, exact-match scorer
    topic       topic_classification: as generation (Lab-1.1) and as encoder labels (BitFit, P-Tuning)
    preference  preference_format: format-following prompts and the rule-based judge (DPO, ORPO)
    alpaca      the Alpaca instruction format built from the course data (Lab-1.3)
"""

from common_utils.tasks import extraction, preference, topic

# Imported for their side effect: each registers its dataset schema with common_utils.data.
__all__ = ["extraction", "preference", "topic"]
