"""Reading raw files in the hub's formats (JSON lines, JSON arrays, CSV, parquet), and reading fields of
a raw row: every error names the file and line (or row) it comes from."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets_registry.spec import DataFormatError, DropRow


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """JSON lines (optionally .gz); a bad line (or a non-UTF-8 byte) fails naming file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh, _utf8_errors_name_the_line(path):
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


@contextlib.contextmanager
def _utf8_errors_name_the_line(path: Path) -> Iterator[None]:
    """A decoding error while reading `path` becomes a DataFormatError naming the file and the line
    (the text reader decodes whole blocks, so its own error knows neither)."""
    from harness.text_files import non_utf8_message

    try:
        yield
    except UnicodeDecodeError:
        raise DataFormatError(non_utf8_message(path)) from None


def read_json_array(path: Path) -> Iterator[dict[str, Any]]:
    """A JSON file holding a list of objects (AlpacaFarm's layout); JSON lines are accepted too."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh, _utf8_errors_name_the_line(path):
        text = fh.read()
    if not text.lstrip().startswith("["):
        yield from read_jsonl(path)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}: item {index}: expected a JSON object, got {type(row).__name__}")
        yield row


def read_csv(path: Path) -> Iterator[dict[str, Any]]:
    """CSV with a header; rows carry `_line` (the file line the record starts on) for error messages."""
    csv.field_size_limit(2**31 - 1)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh, _utf8_errors_name_the_line(path):
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise DataFormatError(f"{path}:1: empty CSV (no header)")
        line = reader.line_num + 1
        for row in reader:
            if None in row:  # more cells than header fields
                raise DataFormatError(f"{path}:{line}: {len(row[None])} cell(s) beyond the header's "
                                      f"{len(reader.fieldnames)} columns")
            row["_line"] = line
            yield row
            line = reader.line_num + 1


def read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise DataFormatError(f"{path}: not a parquet file ({exc})") from None
    for batch in table.iter_batches(batch_size=2048):
        yield from batch.to_pylist()


def read_any(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a raw file by its suffix; every row gets `_where` = 'file:line' for error messages."""
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        rows: Iterator[dict[str, Any]] = read_jsonl(path)
        numbered = True
    elif name.endswith((".json", ".json.gz")):
        rows, numbered = read_json_array(path), False
    elif name.endswith((".csv", ".csv.gz")):
        for row in read_csv(path):
            row["_where"] = f"{path}:{row.pop('_line')}"
            yield row
        return
    elif name.endswith(".parquet"):
        rows, numbered = read_parquet(path), False
    else:
        raise DataFormatError(f"{path}: unknown raw file type (expected .jsonl[.gz], .json, .csv, .parquet)")
    for index, row in enumerate(rows, 1):
        row["_where"] = f"{path}:{index}" if numbered else f"{path}: row {index}"
        yield row


def require_fields(row: dict[str, Any], fields: Iterable[str], where: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        present = sorted(k for k in row if not k.startswith("_"))
        raise DataFormatError(f"{where}: missing field(s) {missing}; present: {present}")


def where(row: dict[str, Any]) -> str:
    return str(row.get("_where", "<hub row>"))


def text_field(row: dict[str, Any], key: str) -> str:
    """A string field; None / non-string content drops the row (a malformed turn), absent fails the file."""
    require_fields(row, [key], where(row))
    value = row[key]
    if value is None:
        raise DropRow(f"missing_{key}")
    if not isinstance(value, str):
        raise DataFormatError(f"{where(row)}: field {key!r} should be a string, got {type(value).__name__}")
    return value
