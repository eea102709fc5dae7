"""Where the harness keeps its stores, and where it finds local data (benchmark files, NLTK data). Every
location can be overridden by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def results_dir() -> Path:
    """Root of the local stores (MLflow, stage cache, models, Optuna, judge cache)."""
    path = Path(os.environ.get("HARNESS_RESULTS_DIR", PROJECT_ROOT / "results")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage_cache_dir() -> Path:
    path = results_dir() / "stages"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_cache_dir() -> Path:
    """Built zoo models; `HARNESS_MODEL_DIR` lets tests share one cache across temporary result dirs."""
    path = Path(os.environ.get("HARNESS_MODEL_DIR", results_dir() / "models")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dirs() -> list[Path]:
    """Local data directories searched (in order) before the hub.

    `HARNESS_DATA_DIR` may hold several paths separated by `os.pathsep`. The repository's sibling
    `../shared/data` (the real files this project is developed against) is appended when present.
    """
    dirs: list[Path] = []
    env = os.environ.get("HARNESS_DATA_DIR")
    if env:
        dirs.extend(Path(p).expanduser().resolve() for p in env.split(os.pathsep) if p)
    else:
        dirs.append(results_dir() / "data")
    shared = PROJECT_ROOT.parent / "shared" / "data"
    if shared.is_dir() and shared.resolve() not in dirs:
        dirs.append(shared.resolve())
    return dirs


def data_label(path: Path) -> str:
    """A data file's name in a fingerprint: relative to the data dir holding it (or to the installed
    package root for package files, e.g. lm-eval's task yamls), so that the same files give the same
    stage key on another machine; absolute otherwise. Characters MLflow refuses in a param name (stage
    configs are logged as params) become "_"."""
    import re
    import sys

    path = Path(path).resolve()
    label = str(path)
    for base in [*data_dirs(), *(Path(p).resolve() for p in sys.path if p and Path(p).is_dir())]:
        try:
            label = str(path.relative_to(base))
            break
        except ValueError:
            continue
    return re.sub(r"[^/\w.\- :]", "_", label)


def find_data_file(*relative_candidates: str) -> Path | None:
    """First existing file among `relative_candidates` under any local data directory."""
    for base in data_dirs():
        for rel in relative_candidates:
            candidate = base / rel
            if candidate.exists():
                return candidate
    return None


def shared_data_dir() -> Path | None:
    """The real shared data folder (`../shared/data`) if this checkout has one; used by tests."""
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def _default_nltk_data() -> None:
    """NLTK_DATA defaults to the shared copy (`../shared/data/nltk_data`) when the user has not set it."""
    if not os.environ.get("NLTK_DATA"):
        shared = shared_data_dir()
        if shared is not None and (shared / "nltk_data").is_dir():
            os.environ["NLTK_DATA"] = str(shared / "nltk_data")


def ensure_nltk_data() -> Path:
    """IFEval's checkers need NLTK `punkt_tab`; point NLTK at the shared copy when the user has not.
    Returns its English folder.

    Raises a RuntimeError telling how to provide it when it cannot be found (lm-eval would otherwise
    try a download that fails offline while printing that it succeeded).
    """
    _default_nltk_data()
    import nltk

    folder = os.environ.get("NLTK_DATA")
    if folder and folder not in nltk.data.path:
        nltk.data.path.insert(0, folder)
    try:
        return Path(str(nltk.data.find("tokenizers/punkt_tab/english/")))
    except LookupError as err:
        raise RuntimeError(
            "IFEval needs the NLTK 'punkt_tab' tokenizer: set NLTK_DATA to a folder containing "
            "tokenizers/punkt_tab (e.g. ../shared/data/nltk_data), or run "
            "`python -m nltk.downloader punkt_tab` on a machine with internet access"
        ) from err


def punkt_tab_dir() -> Path:
    """NLTK punkt_tab's English folder (part of IFEval's fingerprint): looked up in NLTK_DATA first, so
    planning a grid does not import NLTK (seconds); otherwise as `ensure_nltk_data` finds it."""
    _default_nltk_data()
    for folder in os.environ.get("NLTK_DATA", "").split(os.pathsep):
        english = Path(folder) / "tokenizers" / "punkt_tab" / "english"
        if folder and english.is_dir():
            return english
    return ensure_nltk_data()
