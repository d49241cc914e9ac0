"""The Ray-free parts of the deployments: error mapping and the health rule that gets replicas replaced."""

import asyncio

import pytest
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError

from deployments.common import StageHealth
from deployments.http import to_api_error
from engines.errors import EmptyTextError, InputError, NoFaceError
from realtime_avatar.store import StoreUnavailableError


def _wrapped(cause: Exception) -> Exception:
    """What a handle raises when the stage raised ``cause``: Ray's dual-class wrapper."""
    return RayTaskError("stage", "Traceback (most recent call last): ...", cause).as_instanceof_cause()


def test_a_stage_input_error_keeps_its_status_code_and_message():
    error = to_api_error(_wrapped(NoFaceError("no face found in the image")), 2)
    assert (error.status, error.code, error.message) == (422, "no_face", "no face found in the image")
    custom = to_api_error(_wrapped(InputError("bad voice", code="voice_mismatch")), 2)
    assert (custom.status, custom.code) == (400, "voice_mismatch")


def test_an_unreachable_store_is_503_with_retry_after():
    error = to_api_error(_wrapped(StoreUnavailableError("cannot read gs://bucket/avatars/x: timed out")), 2)
    assert (error.status, error.code, error.headers) == (503, "store_unavailable", {"Retry-After": "2"})


def test_backpressure_is_503_with_retry_after():
    error = to_api_error(BackPressureError(num_queued_requests=4, max_queued_requests=4), 3)
    assert (error.status, error.code, error.headers) == (503, "overloaded", {"Retry-After": "3"})


def test_an_unexpected_error_is_a_500_without_its_traceback():
    error = to_api_error(_wrapped(ZeroDivisionError("division by zero")), 2)
    assert error.status == 500 and error.code == "internal_error"
    assert "Traceback" not in error.message and "division" not in error.message


def test_health_fails_after_internal_errors_in_a_row_only():
    health = StageHealth(unhealthy_after=2)

    def broken() -> None:
        raise RuntimeError("CUDA error: an illegal memory access")

    def bad_input() -> None:
        raise EmptyTextError("nothing to say")

    async def scenario() -> None:
        for _ in range(5):  # a client's bad input never makes the replica unhealthy
            with pytest.raises(EmptyTextError):
                await health.call("r1", bad_input)
        health.check()
        with pytest.raises(RuntimeError):
            await health.call("r2", broken)
        health.check()  # one failure may be a fluke
        assert await health.call("r3", lambda: 7) == 7  # success resets the run
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await health.call("r4", broken)
        with pytest.raises(RuntimeError, match="2 internal failures"):
            health.check()

    asyncio.run(scenario())
