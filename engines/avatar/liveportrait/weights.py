"""LivePortrait weight files: the official layout under a root directory, and strict loading.

Layout (as released by KwaiVGI/LivePortrait, human model)::

    <root>/liveportrait/base_models/{appearance_feature_extractor,motion_extractor,
                                     warping_module,spade_generator}.pth
    <root>/liveportrait/retargeting_models/stitching_retargeting_module.pth

The base files are plain state dicts. The retargeting file is a dict of three state dicts
(``retarget_shoulder``, ``retarget_mouth``, ``retarget_eye``) whose keys carry a DDP ``module.`` prefix.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engines.errors import ModelUnavailableError

from .config import LivePortraitConfig
from .networks import LivePortraitNetworks

log = logging.getLogger(__name__)

FETCH_COMMAND = "avatar models fetch liveportrait"
BASE_MODELS = ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator")
BASE_FILES = {name: f"liveportrait/base_models/{name}.pth" for name in BASE_MODELS}
RETARGETING_FILE = "liveportrait/retargeting_models/stitching_retargeting_module.pth"
# network attribute -> top-level key in the retargeting file
RETARGETING_KEYS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
DDP_PREFIX = "module."


def weight_files(root: str | Path) -> list[Path]:
    """Every file the networks need, in the official layout under ``root``."""
    return [Path(root) / rel for rel in (*BASE_FILES.values(), RETARGETING_FILE)]


def check_weights(root: str | Path) -> None:
    """Raise ModelUnavailableError naming each missing file and how to fetch them."""
    missing = [p for p in weight_files(root) if not p.is_file()]
    if missing:
        names = "\n  ".join(str(p) for p in missing)
        raise ModelUnavailableError(
            f"LivePortrait weights are missing under {root}:\n  {names}\n"
            f"Fetch them with `{FETCH_COMMAND}` (needs access to the model hub or the GCS weights cache)."
        )


def _read(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ModelUnavailableError(f"cannot read {path}: {exc}. Re-fetch with `{FETCH_COMMAND}`.") from exc


def _load_strict(module: nn.Module, state: object, path: Path, what: str) -> None:
    if not isinstance(state, Mapping):
        raise ModelUnavailableError(f"{path}: {what} is {type(state).__name__}, expected a state dict")
    try:
        # assign=True adopts the loaded tensors, so the meta-device skeleton never allocates twice.
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelUnavailableError(
            f"{path}: {what} does not match the LivePortrait architecture: {exc}\n"
            f"Re-fetch the official files with `{FETCH_COMMAND}`."
        ) from exc


def load_networks(root: str | Path, config: LivePortraitConfig | None = None) -> LivePortraitNetworks:
    """Load all networks from the official layout with ``strict=True`` (on CPU, eval mode)."""
    check_weights(root)
    root = Path(root)
    with torch.device("meta"):  # skip random init: every tensor is replaced by the checkpoint's
        nets = LivePortraitNetworks(config)
    for name, rel in BASE_FILES.items():
        _load_strict(getattr(nets, name), _read(root / rel), root / rel, name)
    path = root / RETARGETING_FILE
    bundle = _read(path)
    if not isinstance(bundle, Mapping) or not set(RETARGETING_KEYS.values()) <= set(bundle):
        found = sorted(bundle) if isinstance(bundle, Mapping) else type(bundle).__name__
        raise ModelUnavailableError(
            f"{path}: expected keys {sorted(RETARGETING_KEYS.values())}, found {found}"
        )
    # Only the three networks are read; any other top-level entry is ignored, as upstream does.
    for attr, key in RETARGETING_KEYS.items():
        state = bundle[key]
        if isinstance(state, Mapping):
            state = {k.removeprefix(DDP_PREFIX): v for k, v in state.items()}
        _load_strict(getattr(nets, attr), state, path, key)
    return nets.float().eval()  # assign=True keeps the file's dtype; inference expects float32 weights


def save_networks(nets: LivePortraitNetworks, root: str | Path) -> list[Path]:
    """Write ``nets`` in the official layout (the inverse of ``load_networks``)."""
    root = Path(root)
    for name, rel in BASE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(getattr(nets, name).state_dict(), root / rel)
    bundle = {
        key: {DDP_PREFIX + k: v for k, v in getattr(nets, attr).state_dict().items()}
        for attr, key in RETARGETING_KEYS.items()
    }
    (root / RETARGETING_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save(bundle, root / RETARGETING_FILE)
    return weight_files(root)


@dataclass(frozen=True)
class LivePortraitRuntime:
    """Networks placed on a device, with the precision and compilation choices resolved."""

    networks: LivePortraitNetworks
    device: torch.device
    fp16: bool  # run F, M, W, G under float16 autocast (CUDA only)
    warp: Callable[..., torch.Tensor]  # warping_module, compiled when requested on CUDA
    decode: Callable[[torch.Tensor], torch.Tensor]  # spade_generator, likewise

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16)


def make_runtime(
    nets: LivePortraitNetworks,
    *,
    device: str | torch.device = "cpu",
    fp16: bool = False,
    compile: bool = False,
) -> LivePortraitRuntime:
    """Move ``nets`` to ``device``; fp16 and torch.compile only take effect on CUDA."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError(f"device {dev} requested but CUDA is not available")
    on_cuda = dev.type == "cuda"
    if (fp16 or compile) and not on_cuda:
        # CPU half precision is slow and inductor's CPU path gains little here: keep eager fp32.
        log.info("LivePortrait on %s: fp16=%s compile=%s ignored (CUDA only)", dev, fp16, compile)
    nets = nets.to(dev).eval()
    warp: Callable[..., torch.Tensor] = nets.warping_module
    decode: Callable[[torch.Tensor], torch.Tensor] = nets.spade_generator
    if compile and on_cuda:
        # W and G are >95% of the per-frame cost; F and M run once per source image.
        warp = torch.compile(nets.warping_module)
        decode = torch.compile(nets.spade_generator)
    return LivePortraitRuntime(nets, dev, fp16 and on_cuda, warp, decode)


def load_runtime(
    root: str | Path,
    *,
    device: str | torch.device = "cpu",
    fp16: bool = False,
    compile: bool = False,
    config: LivePortraitConfig | None = None,
) -> LivePortraitRuntime:
    """Strictly load the official files under ``root`` and place them on ``device``."""
    return make_runtime(load_networks(root, config), device=device, fp16=fp16, compile=compile)
