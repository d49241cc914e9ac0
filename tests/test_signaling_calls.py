"""The signaling service's own call caps (SIGNALING_MAX_CALLS, SIGNALING_MAX_CALL_MINUTES), on real
sockets against the runtime double of test_signaling.py: concurrent calls through this instance past
the cap are a 503 ``too_many_calls`` that never reaches the runtime, and a call past its minutes is hung
up on the runtime while its conversation goes on. The runtime enforces its own (test_realtime_*)."""

from __future__ import annotations

import time

import pytest

import signaling.app as signaling_app
from signaling import Settings
from signaling.limits import SessionTable
from tests.test_signaling import (
    CHAT,
    FakeRuntime,
    _auth,
    _json_error,
    _offer,
    _session,
    concurrent_requests,
    running_signaling,
    runtime,  # noqa: F401  (the fixture)
)


def test_the_call_caps_come_from_signaling_env_vars():
    settings = Settings.from_env({"SIGNALING_MAX_CALLS": "3", "SIGNALING_MAX_CALL_MINUTES": "2.5"})
    assert (settings.max_calls, settings.max_call_minutes) == (3, 2.5)
    for name, value in (("SIGNALING_MAX_CALLS", "0"), ("SIGNALING_MAX_CALL_MINUTES", "0"),
                        ("SIGNALING_MAX_CALLS", "two")):
        with pytest.raises(ValueError, match=name):
            Settings.from_env({name: value})


def test_the_table_counts_calls_and_offers_in_flight_and_times_each_call():
    now = [1000.0]
    table = SessionTable(max_sessions=8, clock=lambda: now[0], max_calls=2)
    a = table.commit("a", 2000.0, 60)
    b = table.commit("b", 2000.0, 60)
    assert table.reserve_call() and table.reserve_call() and not table.reserve_call()  # two offers out
    table.release_call()
    a.call_id = "ca"
    table.call_started("ca")
    table.release_call()
    assert table.calls == 1 and table.reserve_call()
    table.release_call()
    assert table.calls_over(30) == []
    now[0] += 20
    b.call_id = "cb"  # begun another way (another instance, a restart): timed from its first sweep
    assert table.calls == 2 and not table.reserve_call()
    assert table.calls_over(30) == []
    now[0] += 15
    assert table.calls_over(30) == [a]  # 35 s for ca, 15 s for cb
    a.call_id = None  # hung up: forgotten, and its capacity is back
    now[0] += 20
    assert table.calls_over(30) == [b] and table.calls == 1


def test_calls_past_the_instances_cap_are_refused_before_the_runtime(runtime: FakeRuntime):  # noqa: F811
    with running_signaling(runtime.url, max_calls=2) as client:
        one, two, three = _session(client), _session(client), _session(client)
        assert _offer(client, one["token"]).status_code == 200
        assert _offer(client, two["token"]).status_code == 200
        full = _offer(client, three["token"])
        _json_error(full, 503, "too_many_calls")
        assert int(full.headers["retry-after"]) >= 1
        assert len(runtime.offers) == 2  # the third never cost the runtime a peer connection
        # A conversation calling again replaces its own call: that is not one more.
        assert _offer(client, one["token"]).status_code == 200
        assert len(runtime.calls) == 2
        # One hangs up: its place is free.
        call = next(cid for cid, sid in runtime.calls.items() if sid == two["session_id"])
        assert client.delete(f"/avatar/api/rtc/call/{call}", headers=_auth(two["token"])).status_code == 200
        assert _offer(client, three["token"]).status_code == 200
        # Offers still being answered count too: two at once for one free place leave one call.
        client.delete("/avatar/api/session", headers=_auth(one["token"]))
        four, five = _session(client), _session(client)
        runtime.offer_delay_s = 0.4
        with concurrent_requests(2) as pool:
            answers = list(pool.map(lambda s: _offer(client, s["token"]), (four, five)))
        assert sorted(a.status_code for a in answers) == [200, 503], [a.text for a in answers]
        assert len(runtime.calls) == 2


def test_a_call_past_its_minutes_is_hung_up_and_the_conversation_goes_on(runtime: FakeRuntime,  # noqa: F811
                                                                          monkeypatch):
    monkeypatch.setattr(signaling_app, "SWEEP_INTERVAL_S", 0.2)
    with running_signaling(runtime.url, max_call_minutes=1.0 / 60) as client:
        created = _session(client)
        call = _offer(client, created["token"]).json()["call_id"]
        time.sleep(0.6)
        assert runtime.calls == {call: created["session_id"]}  # not yet
        deadline = time.monotonic() + 5
        while runtime.calls and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runtime.calls == {} and runtime.call_log[-1] == ("hangup", call)
        assert runtime.deleted == []  # the conversation is still open: chat goes on, a new call may start
        assert client.post(CHAT, headers=_auth(created["token"]), json={"text": "hi"}).status_code == 200
        again = _offer(client, created["token"])
        assert again.status_code == 200 and again.json()["call_id"] != call
