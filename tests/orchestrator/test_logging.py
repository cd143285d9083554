"""LOG_FORMAT=json: one JSON object per log line, for journald and log shippers."""

import json

import pytest

LOG_A_LINE = """
import logging
logging.getLogger("orchestrator.example").warning("lead %s routed to %s", "LEAD-000001", "Zoë")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("orchestrator.example").exception("step failed")
"""


def test_json_lines_carry_time_level_logger_and_message(run_python):
    proc = run_python(LOG_A_LINE, env={"LOG_FORMAT": "json"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    first, second = (json.loads(line) for line in err.splitlines())
    assert first["level"] == "WARNING"
    assert first["logger"] == "orchestrator.example"
    assert first["message"] == "lead LEAD-000001 routed to Zoë"
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR"
    assert "ZeroDivisionError: division by zero" in second["exc_info"]


def test_plain_is_the_default(run_python):
    proc = run_python(LOG_A_LINE, env={"LOG_FORMAT": "plain"})
    _, err = proc.communicate(timeout=60)
    assert " WARNING orchestrator.example lead LEAD-000001 routed to Zoë" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err.splitlines()[0])


def test_an_unknown_format_stops_the_start(run_python):
    proc = run_python("", env={"LOG_FORMAT": "xml"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "LOG_FORMAT='xml' is not a log format (use plain or json)" in err
