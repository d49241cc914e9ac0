"""Locust smoke run against the real Serve graph: a few users for ~30 s, and not one failed request."""

from loadtest.run import run_locust


def test_locust_smoke_run_has_no_failures(api_server, tmp_path):
    code, rows = run_locust(api_server, users=2, duration="30s", csv_prefix=tmp_path / "smoke")
    by_name = {(row["Type"], row["Name"]): row for row in rows}
    assert code == 0, by_name
    for key in (("POST", "/v1/tts"), ("POST", "/v1/render"), ("POST", "/v1/render stream"),
                ("TTFB", "/v1/render stream"), ("DOWNLOAD", "/v1/render stream")):
        assert int(by_name[key]["Request Count"]) >= 1, key
    total = by_name[("", "Aggregated")]
    assert int(total["Failure Count"]) == 0 and int(total["Request Count"]) >= 10
