"""The file formats the stages share: each read (and written) in exactly one place.

- :mod:`pipeline.formats.lines`: the release's text files (docs/architecture.md, "Release
  layout"): where they are, the byte-level line reader, and the ``$``-separated lines,
  ``image$attribute$caption`` (label files, checked line by line and for duplicate images) and
  ``text$img$img...`` (the test ground truth), read and written.
- :mod:`pipeline.formats.tables`: the prepared tables (``images``, ``labels``, ``queries``
  Parquet and ``quarantine.csv``): their columns and dtypes, built, written and read.
- :mod:`pipeline.formats.labels`: ``labels.parquet`` rows decoded to class indices per group
  or to ``{group: value or None}`` per image.
"""

from pipeline.formats.labels import MISSING, label_dicts, label_matrix, label_records
from pipeline.formats.lines import (
    IMAGE_DIRS, IMAGE_SUFFIXES, LABEL_FILES, SEP, TEST_GT, TEST_TEXT, FormatError, LabelLine,
    check_label_lines, format_gt_line, format_label_line, parse_gt_line, parse_label_line, read_gt,
    read_gt_lines, read_label_file, read_lines,
)
from pipeline.formats.tables import (
    TABLES, columns, label_frame, labels_from_files, read_table, read_table_file, table_frame, write_table,
)

__all__ = [
    "IMAGE_DIRS", "IMAGE_SUFFIXES", "LABEL_FILES", "MISSING", "SEP", "TABLES", "TEST_GT", "TEST_TEXT", "FormatError",
    "LabelLine", "check_label_lines", "columns", "format_gt_line", "format_label_line", "label_dicts",
    "label_frame", "label_matrix", "label_records", "labels_from_files", "parse_gt_line", "parse_label_line",
    "read_gt", "read_gt_lines", "read_label_file", "read_lines", "read_table", "read_table_file", "table_frame", "write_table",
]
