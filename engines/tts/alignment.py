"""Open an ONNX TTS model with its duration predictor's output exposed, so speech comes with its timing.

Kokoro and Piper (VITS) both predict how many decoder frames each input symbol lasts and expand the
symbols by those counts before decoding: the counts are the alignment of the audio they produce, exact
to a frame. Their exported graphs return only the audio, so the predictor's tensor is added to the
graph's outputs when the model is loaded (in memory; the file is untouched).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def open_session(path: Path | str, options: Any, durations_tensor: str) -> tuple[Any, bool]:
    """An onnxruntime CPU session for ``path`` that also returns ``durations_tensor`` as its last output
    where the graph has it; the flag says whether it does (a different export just gives no timing)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    model = _with_output(Path(path), durations_tensor)
    if model is not None:
        try:
            return ort.InferenceSession(model, sess_options=options, providers=providers), True
        except Exception as exc:
            log.warning("%s: cannot expose %s (%s): it speaks without phone timing", Path(path).name,
                        durations_tensor, exc)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers), False


def _with_output(path: Path, tensor: str) -> bytes | None:
    try:
        import onnx
    except ImportError:
        log.warning("onnx is not installed: %s speaks without phone timing (pip install onnx)", path.name)
        return None
    model = onnx.load(str(path))
    if any(output.name == tensor for output in model.graph.output):
        return model.SerializeToString()
    produced = {name for node in model.graph.node for name in node.output}
    if tensor not in produced:
        log.warning("%s has no tensor %s: it speaks without phone timing", path.name, tensor)
        return None
    # The duration predictor's counts are float in both graphs (rounded/ceiled, then cast later).
    model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()
