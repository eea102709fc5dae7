"""Reading user-given text files (grids, sweeps, raw data) with errors that name the file and the line.

A wrong path, a folder given for a file, or a file that is not UTF-8 (a spreadsheet export in cp1252, a
binary) must read as one sentence naming the file, never as a raw `IsADirectoryError` or
`UnicodeDecodeError` from deep inside a parser.
"""

from __future__ import annotations

from pathlib import Path


def non_utf8_message(path: Path) -> str:
    """`path:LINE: not UTF-8 ...` for the first undecodable byte of `path` (read as bytes, line by line)."""
    opener = _gzip_or_plain(path)
    with opener(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return (f"{path}:{lineno}: not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); "
                        "save the file as UTF-8")
    # A multi-byte sequence cut by the end of the file, or an error the line split hid.
    return f"{path}: not UTF-8 text; save the file as UTF-8"


def _gzip_or_plain(path: Path):
    import gzip

    return gzip.open if path.suffix == ".gz" else open


def read_text(path: Path, what: str, error: type[Exception] = ValueError) -> str:
    """The UTF-8 text of the `what` file at `path`, or `error` saying why it cannot be read."""
    if not path.exists():
        raise error(f"{what} file {path} does not exist")
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.yaml"))[:5]
        hint = f" (it holds {', '.join(inside)}{', ...' if len(inside) == 5 else ''})" if inside else ""
        raise error(f"{path} is a directory, not a {what} file{hint}: give the path of a YAML file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(non_utf8_message(path)) from None
