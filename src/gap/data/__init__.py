"""Fine-tuning data: canonical records of kept rounds, exporters, validation, import, cards.

Nothing heavy loads on import: ``datasets``, ``transformers``, matplotlib and the embedding model are
imported by the functions that need them.
"""

from gap.data._card import card_stats, render_card, write_card
from gap.data._dedup import DEFAULT_THRESHOLD, merge_near_duplicates, minilm_embedder
from gap.data._export import (
    ExportResult,
    export_records,
    export_records_to,
    push_to_hub,
    read_manifest,
    save_records,
    split_file,
)
from gap.data._exporters import (
    FORMATS,
    Format,
    dataset_info_entry,
    hf_row,
    llava_row,
    sharegpt_row,
    swift_row,
)
from gap.data._gapvqa import import_files, import_gap_vqa
from gap.data._questions import QUESTION_TYPES, QuestionType, question_type
from gap.data._records import (
    IMAGE_TOKEN,
    RECORDS_FILE,
    Message,
    Provenance,
    Record,
    iter_records,
    read_records,
    strip_image_tokens,
    write_records,
)
from gap.data._references import (
    PROMPT_VERSION,
    ReferenceJob,
    ReferenceOutcome,
    ask_reference,
    reference_system_prompt,
    run_reference_jobs,
)
from gap.data._split import assign_splits, parse_split
from gap.data._validate import Problem, TokenCounter, ValidationReport, validate_export

__all__ = [
    "DEFAULT_THRESHOLD",
    "FORMATS",
    "IMAGE_TOKEN",
    "PROMPT_VERSION",
    "QUESTION_TYPES",
    "RECORDS_FILE",
    "ExportResult",
    "Format",
    "Message",
    "Problem",
    "Provenance",
    "QuestionType",
    "Record",
    "ReferenceJob",
    "ReferenceOutcome",
    "TokenCounter",
    "ValidationReport",
    "ask_reference",
    "assign_splits",
    "card_stats",
    "dataset_info_entry",
    "export_records",
    "export_records_to",
    "hf_row",
    "import_files",
    "import_gap_vqa",
    "iter_records",
    "llava_row",
    "merge_near_duplicates",
    "minilm_embedder",
    "parse_split",
    "push_to_hub",
    "question_type",
    "read_manifest",
    "read_records",
    "reference_system_prompt",
    "render_card",
    "run_reference_jobs",
    "save_records",
    "sharegpt_row",
    "split_file",
    "strip_image_tokens",
    "swift_row",
    "validate_export",
    "write_card",
    "write_records",
]
