"""dap_whpx/handlers/events.py: guest serial output to DAP output events."""

from __future__ import annotations

from typing import Any

from dap_whpx.handlers.events import translate
from whpx_core.debug.events import Output


class RecordingSession:
    """The two things translate() uses of a Session: its state and event()."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def event(self, name: str, body: dict[str, Any]) -> None:
        self.sent.append((name, body))


def test_a_character_split_across_output_events_arrives_whole():
    session = RecordingSession()
    text = "temp: 21 °C ✓\n".encode()
    split = text.index("°".encode()) + 1  # inside the two-byte degree sign
    for chunk in (text[:split], text[split:]):
        translate(session, Output(chunk))  # type: ignore[arg-type]
    assert "".join(body["output"] for _, body in session.sent) == "temp: 21 °C ✓\n"
    assert all(body["category"] == "stdout" for _, body in session.sent)
