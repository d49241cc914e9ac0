"""LivePortrait (KwaiVGI, MIT) networks, written here and loadable from the released checkpoints.

Public API::

    model = LivePortraitModel.from_weights(root, device="cuda", fp16=True, compile=True)
    source = model.prepare_source(rgb_crop_256)           # once per portrait
    frames = model.animate_batch(source, [FrameControls(lip_open=0.3, yaw=5.0), ...])

Only ``engines.errors`` is shared with the rest of the project.
"""

from .config import LivePortraitConfig
from .model import FrameControls, LivePortraitModel, SourceState
from .networks import LivePortraitNetworks
from .weights import (
    FETCH_COMMAND,
    LivePortraitRuntime,
    check_weights,
    load_networks,
    load_runtime,
    make_runtime,
    save_networks,
    weight_files,
)

__all__ = [
    "FETCH_COMMAND",
    "FrameControls",
    "LivePortraitConfig",
    "LivePortraitModel",
    "LivePortraitNetworks",
    "LivePortraitRuntime",
    "SourceState",
    "check_weights",
    "load_networks",
    "load_runtime",
    "make_runtime",
    "save_networks",
    "weight_files",
]
