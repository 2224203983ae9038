"""The file worker's settings from the environment, and its parser's time limit."""

from __future__ import annotations

import threading

import pytest
import trio

from kelpie_trio.files import parse as parse_module
from kelpie_trio.files.kinds import kind_for
from kelpie_trio.files.parse import ParseError
from kelpie_trio.service.file_worker import MAX_UPLOAD_CEILING, FileSettings, threaded_parser


def test_the_upload_limit_and_parse_time_come_from_the_environment() -> None:
    settings = FileSettings.from_env({"KELPIE_MAX_UPLOAD_BYTES": "1000",
                                      "KELPIE_PARSE_TIMEOUT": "2.5"})  # fmt: skip
    assert (settings.max_upload_bytes, settings.parse_timeout) == (1000, 2.5)
    assert FileSettings.from_env({}) == FileSettings()
    with pytest.raises(ValueError, match="between 1 and"):
        FileSettings.from_env({"KELPIE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_CEILING + 1)})
    with pytest.raises(ValueError, match="not an integer"):
        FileSettings.from_env({"KELPIE_MAX_UPLOAD_BYTES": "5MB"})


async def test_a_parser_stuck_on_a_file_is_given_up_at_its_time_limit(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()

    def stuck(data: bytes, kind: object) -> str:
        release.wait(10)  # a hostile file: the library never returns (until the test ends)
        return "late"

    monkeypatch.setattr("kelpie_trio.service.file_worker.parse", stuck)
    started = trio.current_time()
    try:
        with pytest.raises(ParseError, match="took longer than 30 s"):
            await threaded_parser(30.0)(b"x", kind_for(None, "a.txt"))
        assert trio.current_time() - started == pytest.approx(30.0)
    finally:
        release.set()
    assert parse_module.parse is not stuck  # the module's own parser is untouched
