"""Suites over the prepared tables (``images``, ``labels``, ``queries``) and what hangs off them.

Each builder takes plain DataFrames and returns a :class:`~pipeline.validate.engine.Suite`. Checks
that GE has no single expectation for (a pedestrian's 21 bits agreeing with its 12 group columns,
an image name seen in two splits) become a derived column computed here with pandas and checked
by a GE expectation, so every problem is counted per row, with example names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import formats, schema
from pipeline.validate.engine import WARNING, Suite, expectation

#: Image-name formats of the official release (see track2/README.md).
PEDESTRIAN_NAME = r"^\d{6}\.jpg$"
VEHICLE_NAME = r"^[a-z]{10}\.jpg$"  # train and val vehicles
TEST_NAME = r"^(?:\d{6}|vehicle_\d+)\.jpg$"  # test domains are unknown until the router decides

_PED_GROUPS = [g.name for g in schema.PEDESTRIAN_GROUPS]
_VEHICLE_COLUMNS = [g.name for g in schema.VEHICLE_GROUPS]

#: The Parquet tables the schema suite checks (the quarantine's columns are read_prepared's check).
CHECKED_TABLES = ("images", "labels", "queries")


def kind_of(dtype: str) -> str:
    """The kind of values (:func:`column_kind`) a contract dtype holds: ``Int8`` -> ``integer``."""
    return "string" if dtype == "string" else "integer" if dtype.lower().startswith("int") else dtype


def column_kind(series: pd.Series) -> str:
    """``string``, ``integer``, ``float``, ``boolean``, ``empty`` (all null) or the dtype name."""
    if series.isna().all():
        return "empty"
    types = pd.api.types
    if types.is_bool_dtype(series):
        return "boolean"
    if types.is_integer_dtype(series):
        return "integer"
    if types.is_float_dtype(series):
        return "float"
    if types.is_string_dtype(series) or series.dropna().map(type).eq(str).all():
        return "string"
    return str(series.dtype)


def conform(df: pd.DataFrame, table: str) -> pd.DataFrame:
    """A copy with every contract column present (missing ones all null), so the other suites
    still run when the schema suite has already reported the missing column."""
    df = df.copy()
    for column in formats.columns(table):
        if column not in df.columns:
            df[column] = pd.Series(pd.NA, index=df.index, dtype="object")
    return df


def schema_suite(tables: dict[str, pd.DataFrame]) -> Suite:
    """Every contract column (:data:`pipeline.formats.tables.TABLES`) exists with the right kind of values."""
    rows = []
    for table in CHECKED_TABLES:
        df = tables[table]
        for column, dtype in formats.TABLES[table].items():
            kind = kind_of(dtype)
            observed = column_kind(df[column]) if column in df.columns else "missing"
            rows.append({"table": table, "column": column, "expected": kind,
                         "observed": kind if observed == "empty" else observed})
    data = pd.DataFrame(rows)
    return Suite("schema", data, [
        expectation("ExpectColumnPairValuesToBeEqual", "every table column exists with the contract's type",
                    column_A="expected", column_B="observed", ignore_row_if="neither"),
    ], id_columns=("table", "column"), notes="Columns and types of the prepared tables (docs/architecture.md).")


def _key(df: pd.DataFrame) -> pd.Series:
    return df["split"].astype("string") + "/" + df["name"].astype("string")


def _text_expectations(column: str, present: str, plural: str, min_chars: int, max_chars: int) -> list:
    """Caption-like text: present, not blank, of sane length (labels' captions and query texts)."""
    return [
        expectation("ExpectColumnValuesToNotBeNull", present, column=column),
        expectation("ExpectColumnValuesToMatchRegex", f"{plural} are not blank", column=column, regex=r"\S"),
        expectation("ExpectColumnValueLengthsToBeBetween", f"{plural} are {min_chars}-{max_chars} characters long",
                    column=column, min_value=min_chars, max_value=max_chars),
    ]


def _name_expectations(test_split: bool) -> list:
    from great_expectations.expectations.row_conditions import Column

    out = [
        expectation("ExpectColumnValuesToMatchRegex", "pedestrian names are 6 digits (000001.jpg)",
                    column="name", regex=PEDESTRIAN_NAME,
                    row_condition=(Column("domain") == "pedestrian") & (Column("split") != "test")),
        expectation("ExpectColumnValuesToMatchRegex",
                    "train/val vehicle names are 10 lower-case letters (kcbluaihml.jpg)",
                    column="name", regex=VEHICLE_NAME,
                    row_condition=(Column("domain") == "vehicle") & (Column("split") != "test")),
    ]
    if test_split:
        out.append(expectation("ExpectColumnValuesToMatchRegex",
                               "test names are 6 digits or vehicle_<digits> (vehicle_0000002.jpg)",
                               column="name", regex=TEST_NAME, row_condition=Column("split") == "test"))
    return out


def images_suite(images: pd.DataFrame, labels: pd.DataFrame) -> Suite:
    """The images table: splits, domains, name formats, duplicates, leaks between splits."""
    from great_expectations.expectations.row_conditions import Column

    data = images.copy()
    data["n_splits"] = data.groupby("name", dropna=False)["split"].transform("nunique").astype("int64")
    labelled = set(_key(labels))
    data["has_label"] = pd.array(np.where(data["split"].isin(["train", "val"]), _key(data).isin(labelled), None),
                                 dtype="boolean")
    return Suite("images_table", data, [
        expectation("ExpectColumnValuesToNotBeNull", "every image has a name", column="name"),
        expectation("ExpectColumnValuesToNotBeNull", "every image has a path", column="path"),
        expectation("ExpectColumnValuesToBeInSet", "split is train, val or test", column="split",
                    value_set=list(schema.SPLITS)),
        expectation("ExpectColumnValuesToBeInSet", "domain is pedestrian or vehicle", column="domain",
                    value_set=list(schema.DOMAINS)),
        expectation("ExpectColumnValuesToNotBeNull", "train/val images have a domain", column="domain",
                    row_condition=Column("split") != "test"),
        *_name_expectations(test_split=True),
        expectation("ExpectCompoundColumnsToBeUnique", "no duplicate image names within a split",
                    column_list=["split", "name"]),
        expectation("ExpectColumnValuesToBeBetween", "no image name in two splits", column="n_splits",
                    min_value=1, max_value=1),
        expectation("ExpectColumnValuesToBeInSet", "every train/val image has a kept label line",
                    WARNING, column="has_label", value_set=[True]),
    ], id_columns=("split", "name"), notes="data/prepared/images.parquet")


def labels_suite(labels: pd.DataFrame, images: pd.DataFrame, min_caption_chars: int,
                 max_caption_chars: int) -> Suite:
    """The labels table: pedestrian bit constraints, vehicle vocabulary, captions, references."""
    from great_expectations.expectations.row_conditions import Column

    data = labels.copy()
    pedestrian = (data["domain"] == "pedestrian").fillna(False).to_numpy(bool)
    vehicle = (data["domain"] == "vehicle").fillna(False).to_numpy(bool)
    bits_cols = list(schema.PEDESTRIAN_BITS)
    bits = data[bits_cols].apply(pd.to_numeric, errors="coerce")
    binary = bits.isin([0, 1])
    data["n_binary_bits"] = pd.array(np.where(pedestrian, binary.sum(axis=1), None), dtype="Int64")
    upper = ["UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice"]
    data["n_upper_patterns"] = pd.array(np.where(pedestrian, bits[upper].fillna(0).sum(axis=1), None),
                                        dtype="Int64")
    valid = pedestrian & binary.all(axis=1).to_numpy() & _meets_constraints(bits)
    data["groups_match_bits"] = _groups_match_bits(data, bits, valid)
    data["n_vehicle_labels"] = pd.array(np.where(vehicle, data[_VEHICLE_COLUMNS].notna().sum(axis=1), None),
                                        dtype="Int64")
    data["has_image"] = _key(data).isin(set(_key(images)))
    ped = Column("domain") == "pedestrian"

    def exactly_one(what: str, names: Sequence[str]):
        return expectation("ExpectMulticolumnSumToEqual", f"pedestrians have exactly one {what} bit",
                           column_list=list(names), sum_total=1, row_condition=ped)

    vocab = [expectation("ExpectColumnValuesToBeInSet", f"vehicle {g.name} is in the vocabulary",
                         column=g.name, value_set=list(g.values)) for g in schema.VEHICLE_GROUPS]
    return Suite("labels", data, [
        expectation("ExpectColumnValuesToBeInSet", "labels are train or val", column="split",
                    value_set=["train", "val"]),
        expectation("ExpectColumnValuesToNotBeNull", "every label has a domain", column="domain"),
        expectation("ExpectColumnValuesToBeInSet", "domain is pedestrian or vehicle", column="domain",
                    value_set=list(schema.DOMAINS)),
        *_name_expectations(test_split=False),
        expectation("ExpectCompoundColumnsToBeUnique", "no duplicate label names within a split",
                    column_list=["split", "name"]),
        expectation("ExpectColumnValuesToBeInSet", "every label names an image of its split in the images table",
                    column="has_image", value_set=[True]),
        *_text_expectations("caption", "every label has a caption", "captions", min_caption_chars,
                            max_caption_chars),
        expectation("ExpectColumnValuesToNotMatchRegex", "captions hold no '$' field separator",
                    column="caption", regex=r"\$"),
        expectation("ExpectColumnValuesToMatchRegex", "every label has a non-blank attribute field",
                    column="attribute", regex=r"\S"),
        expectation("ExpectColumnValuesToBeBetween", "pedestrians have all 21 bits set to 0 or 1",
                    column="n_binary_bits", min_value=schema.N_BITS, max_value=schema.N_BITS),
        exactly_one("age", ("AgeOver60", "Age18-60", "AgeLess18")),
        exactly_one("orientation", ("Front", "Side", "Back")),
        exactly_one("sleeve", ("ShortSleeve", "LongSleeve")),
        expectation("ExpectColumnPairValuesToBeInSet", "pedestrians never carry a shoulder bag and a backpack together",
                    column_A="ShoulderBag", column_B="Backpack", value_pairs_set=[(0, 0), (0, 1), (1, 0)],
                    ignore_row_if="either_value_is_missing", row_condition=ped),
        expectation("ExpectColumnValuesToBeBetween", "pedestrians have at most one upper pattern",
                    column="n_upper_patterns", min_value=0, max_value=1),
        expectation("ExpectColumnValuesToBeInSet", "pedestrian group columns agree with the bits",
                    column="groups_match_bits", value_set=[True]),
        *vocab,
        expectation("ExpectColumnValuesToBeBetween", "vehicles carry at least one of colour, type, brand",
                    column="n_vehicle_labels", min_value=1),
    ], id_columns=("split", "name"), notes="data/prepared/labels.parquet")


def _meets_constraints(bits: pd.DataFrame) -> np.ndarray:
    """Vectorised :func:`pipeline.schema.constraint_violations` is empty (rows with any NA: False)."""
    b = bits.fillna(-1)
    one = lambda *names: b[list(names)].sum(axis=1).eq(1)  # noqa: E731
    return (one("AgeOver60", "Age18-60", "AgeLess18") & one("Front", "Side", "Back")
            & one("ShortSleeve", "LongSleeve") & ~(b["ShoulderBag"].eq(1) & b["Backpack"].eq(1))
            & b[["UpperStride", "UpperLogo", "UpperPlaid", "UpperSplice"]].clip(lower=0).sum(axis=1).le(1)
            ).to_numpy(bool)


def _groups_match_bits(data: pd.DataFrame, bits: pd.DataFrame, rows: np.ndarray) -> pd.arrays.BooleanArray:
    """True where the 12 group columns equal the groups derived from the bits; judged only on
    ``rows`` with valid bits (other rows are reported by the constraint expectations)."""
    out = np.full(len(data), None, dtype=object)
    if rows.any():
        expected = schema.bits_matrix_to_groups(bits.to_numpy()[rows].astype(np.int8))
        stated = data.loc[rows, _PED_GROUPS].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        out[rows] = (stated == expected).all(axis=1)
    return pd.array(out, dtype="boolean")


def queries_suite(queries: pd.DataFrame, images: pd.DataFrame, min_caption_chars: int,
                  max_caption_chars: int) -> Suite:
    """The queries table: texts, ids and, for label-file queries, the image described.

    Ingest also writes the training captions as queries (their image known), so ``train`` is
    accepted next to the ``val``/``test`` of docs/architecture.md.
    """
    from great_expectations.expectations.row_conditions import Column

    data = queries.copy()
    known = set(_key(images))
    labelled = data["split"].isin(["train", "val"]).fillna(False).to_numpy(bool)
    keys = data["split"].astype("string") + "/" + data["image"].astype("string")
    data["image_known"] = pd.array(np.where(labelled, keys.isin(known), None), dtype="boolean")
    return Suite("queries", data, [
        expectation("ExpectColumnValuesToBeInSet", "queries are train, val or test", column="split",
                    value_set=list(schema.SPLITS)),
        expectation("ExpectColumnValuesToNotBeNull", "every query has a query_id", column="query_id"),
        expectation("ExpectColumnValuesToBeBetween", "query_id is a position (>= 0)", column="query_id",
                    min_value=0),
        expectation("ExpectCompoundColumnsToBeUnique", "query ids are unique within a split",
                    column_list=["split", "query_id"]),
        *_text_expectations("text", "every query has a text", "query texts", min_caption_chars,
                            max_caption_chars),
        expectation("ExpectColumnValuesToBeInSet", "every train/val query names an image of its split",
                    column="image_known", value_set=[True]),
        expectation("ExpectColumnValuesToBeNull", "test queries name no image", column="image",
                    row_condition=Column("split") == "test"),
    ], id_columns=("split", "query_id"), notes="data/prepared/queries.parquet")


def read_test_texts(path: Path) -> list[str]:
    """The captions of ``test_text.txt`` read as ingest reads them (:func:`pipeline.formats.read_lines`);
    a line that is not UTF-8 keeps its bytes escaped, so it cannot silently match a cleaned query."""
    return [(text if text is not None else raw).strip() for _, text, raw in formats.read_lines(path)[0]]


def query_order_suite(queries: pd.DataFrame, test_lines: list[str]) -> Suite:
    """Line i of ``test_text.txt`` has the test query with ``query_id`` i and the same text, and
    the test rows come in file order: the submission must list the texts in exactly that order.

    One row per line (plus one per query id past the end), so a dropped or changed line counts
    once, not once for every line after it.
    """
    test = queries[queries["split"] == "test"].reset_index(drop=True)
    ids = pd.to_numeric(test["query_id"], errors="coerce")
    first = test.assign(rank=np.arange(len(test)), qid=ids).dropna(subset=["qid"]).drop_duplicates("qid")
    by_id = first.set_index(first["qid"].astype("int64"))
    extra = sorted(i for i in by_id.index if not 0 <= i < len(test_lines))
    positions = list(range(len(test_lines))) + extra
    found = by_id.reindex(positions)
    rank = found["rank"].to_numpy(float)
    seen = np.fmax.accumulate(np.where(np.isnan(rank), -np.inf, rank))  # highest table rank so far
    in_order = np.r_[True, rank[1:] > seen[:-1]] | np.isnan(rank)
    data = pd.DataFrame({
        "line": np.array(positions) + 1,
        # object, not "string": GE compares the pair with ==, and pd.NA == x is NA, not False.
        "file_text": pd.Series([test_lines[i] if i < len(test_lines) else None for i in positions], dtype=object),
        "query_text": pd.Series([None if pd.isna(t) else str(t).strip() for t in found["text"]], dtype=object),
        "in_order": in_order,
    })
    return Suite("test_order", data, [
        expectation("ExpectColumnPairValuesToBeEqual",
                    "every test_text.txt line has its query (query_id = line - 1, same text)",
                    column_A="file_text", column_B="query_text", ignore_row_if="neither"),
        expectation("ExpectColumnValuesToBeInSet", "test query rows come in file order", column="in_order",
                    value_set=[True]),
    ], id_columns=("line",), notes="release test/test_text.txt against the test rows of queries.parquet")


def class_counts(labels: pd.DataFrame) -> pd.DataFrame:
    """Training examples per class value: one row per (domain, group, value) of the schema."""
    train = labels[labels["split"] == "train"]
    rows = []
    for domain, groups in schema.GROUPS_BY_DOMAIN.items():
        part = train[train["domain"] == domain]
        for g in groups:
            column = pd.to_numeric(part[g.name], errors="coerce") if domain == "pedestrian" else part[g.name]
            counts = column.value_counts()
            for k, value in enumerate(g.values):
                n = counts.get(k if domain == "pedestrian" else value, 0)
                rows.append({"domain": domain, "group": g.name, "value": value, "n_train": int(n)})
    return pd.DataFrame(rows)


def class_counts_suite(labels: pd.DataFrame, min_examples: int) -> Suite:
    """Each class value has at least ``min_examples`` training examples."""
    return Suite("class_counts", class_counts(labels), [
        expectation("ExpectColumnValuesToBeBetween",
                    f"every class value has at least {min_examples} training examples",
                    column="n_train", min_value=min_examples),
    ], id_columns=("group", "value"), notes="Training examples per attribute value (labels, train split).")


def quarantine_suite(quarantine: pd.DataFrame, labels: pd.DataFrame, queries: pd.DataFrame,
                     images: pd.DataFrame, max_fraction: float) -> Suite:
    """Lines (and unreadable image files) ingest set aside, per file, against what it kept."""
    kept = {**{Path(f).name: int((labels["split"] == s).sum()) for s, f in formats.LABEL_FILES.items()},
            Path(formats.TEST_TEXT).name: int((queries["split"] == "test").sum()),
            "image files": len(images)}
    # Ingest records an unreadable test image under its own path; count those together.
    files = quarantine["file"].astype(str).map(lambda f: Path(f).name if f.endswith(".txt") else "image files")
    per_file = files.value_counts()
    rows = []
    for name in list(kept) + sorted(set(per_file.index) - set(kept)):
        n_q = int(per_file.get(name, 0))
        n_kept = kept.get(name, 0)
        rows.append({"file": name, "kept": n_kept, "quarantined": n_q, "fraction": n_q / max(1, n_q + n_kept)})
    return Suite("quarantine", pd.DataFrame(rows), [
        expectation("ExpectColumnValuesToBeBetween", "no line was quarantined", WARNING,
                    column="quarantined", max_value=0),
        expectation("ExpectColumnValuesToBeBetween", f"at most {max_fraction:.1%} of a file's lines quarantined",
                    column="fraction", max_value=max_fraction),
    ], id_columns=("file", "quarantined"), notes="data/prepared/quarantine.csv against the kept rows")
