"""What the file tools decide (kelpie_trio/files/), without a store: which files close, what
window of a file an agent sees, what grep finds, how folders appear in context."""

from __future__ import annotations

import pytest

from kelpie_trio.files.kinds import DOCX, PDF, kind_for, stored_kind
from kelpie_trio.files.lines import TRUNCATED_NOTE, WindowError, split_lines, truncate_view, window
from kelpie_trio.files.tools import (
    FileState,
    FolderInfo,
    ToolError,
    file_defaults,
    format_semantic,
    grep,
    open_requests,
    plan_attach,
    plan_open,
    render_directories,
)


def _open(name: str, used: float, folder: str = "source-1") -> FileState:
    return FileState(f"file-{name}", name, folder, is_open=True, view="x", last_accessed=used)


def test_opening_past_the_limit_closes_the_least_recently_used() -> None:
    states = [_open("d/a", 3.0), _open("d/b", 1.0), _open("d/c", 2.0)]
    assert plan_open(states, "d/new", max_open=3) == ["d/b"]
    assert plan_open(states, "d/new", max_open=2) == ["d/b", "d/c"]
    assert plan_open(states, "d/new", max_open=4) == []


def test_reopening_an_open_file_closes_nothing() -> None:
    states = [_open("d/a", 3.0), _open("d/b", 1.0), _open("d/c", 2.0)]
    assert plan_open(states, "d/b", max_open=3) == []


def test_arrivals_open_first_and_the_most_recent_others_keep_the_room_left() -> None:
    states = [_open("d/a", 3.0), _open("d/b", 1.0), _open("d/c", 2.0)]
    opened, closed = plan_attach(states, ["e/x", "e/y"], max_open=3)
    assert opened == {"e/x", "e/y", "d/a"} and closed == ["d/b", "d/c"]
    opened, closed = plan_attach([], ["e/x", "e/y", "e/z"], max_open=2)
    assert opened == {"e/x", "e/y"} and closed == []


def test_defaults_follow_the_context_window_as_letta_sizes_them() -> None:
    assert file_defaults(None) == (5, 50_000)
    assert file_defaults(8_000) == (3, 5_000)
    assert file_defaults(128_000) == (10, 25_000)
    assert file_defaults(1_000_000) == (15, 40_000)


def test_a_window_numbers_its_lines_and_says_where_it_is() -> None:
    lines = ["one", "two", "three", "four"]
    assert (
        window(lines) == "[Viewing file start (out of 4 lines)]\n1: one\n2: two\n3: three\n4: four"
    )
    assert window(lines, 1, 3) == "[Viewing lines 2 to 3 (out of 4 lines)]\n2: two\n3: three"
    assert window(lines, 2, None).startswith("[Viewing lines 3 to end (out of 4 lines)]\n3: three")
    assert window(lines, 3, 99).endswith("4: four")  # the end is clamped
    with pytest.raises(WindowError, match="has only 4 lines"):
        window(lines, 4, 6, name="d/a.txt")


def test_a_view_past_the_char_limit_is_cut_and_says_so() -> None:
    view = "\n".join(f"{i}: " + "word " * 20 for i in range(100))
    cut = truncate_view(view, 500)
    assert len(cut) <= 500 and cut.endswith(TRUNCATED_NOTE)
    assert truncate_view("short", 500) == "short"


def test_lines_follow_the_kind_of_file() -> None:
    text = "# Title\n\nFirst sentence. Second one! A third?\n\n  indented\n"
    assert split_lines(text, "lines") == ["# Title", "First sentence. Second one! A third?",
                                          "indented"]  # fmt: skip
    assert split_lines(text, "sentences")[1:] == ["Second one!", "A third? indented"]
    assert split_lines("def f():\n    return 1\n\n", "code") == ["def f():", "    return 1"]


def test_grep_pages_matches_with_their_context() -> None:
    files = [("d/a.md", [f"line {i} kelp" if i % 2 else f"line {i}" for i in range(60)]),
             ("d/b.txt", ["no", "KELP here", "no"])]  # fmt: skip
    text, matched = grep(files, "kelp")
    assert matched == ["d/a.md", "d/b.txt"]
    assert text.startswith("Found 31 total matches across 2 files (showing matches 1-20 of 31)")
    assert "  - d/a.md: 30 matches" in text and "  - d/b.txt: 1 matches" in text
    assert "=== d/a.md:2 ===\n  1: line 0\n> 2: line 1 kelp\n  3: line 2" in text
    assert 'grep_files(pattern="kelp", offset=20)' in text
    last, _ = grep(files, "kelp", offset=20)
    assert "showing matches 21-31 of 31" in last and "=== d/b.txt:2 ===" in last
    assert last.rstrip().endswith("No more matches to show.")
    only, matched = grep(files, "kelp", include="*.txt")
    assert matched == ["d/b.txt"] and "Found 1 total matches across 1 files" in only


def test_grep_refuses_what_it_cannot_search() -> None:
    with pytest.raises(ToolError, match="Empty search pattern"):
        grep([("a", ["x"])], "  ")
    with pytest.raises(ToolError, match="Invalid regex pattern"):
        grep([("a", ["x"])], "(unclosed")
    assert grep([], "x")[0] == "No files are currently attached to search"
    assert grep([("a", ["x"])], "zzz")[0] == "No matches found for pattern: 'zzz'"


def test_open_requests_are_checked_before_anything_opens() -> None:
    requests, close_others = open_requests(
        {
            "file_requests": [{"file_name": "d/a", "offset": 2, "length": 3}],
            "close_all_others": True,
        },
        max_open=5,
    )
    assert (requests[0].start, requests[0].end, close_others) == (2, 5, True)
    assert requests[0].describe() == "d/a (lines 3-5)"
    with pytest.raises(ToolError, match="exceeds configured maximum limit of 1 files"):
        open_requests({"file_requests": [{"file_name": "a"}, {"file_name": "b"}]}, max_open=1)
    with pytest.raises(ToolError, match="must be >= 0"):
        open_requests({"file_requests": [{"file_name": "a", "offset": -1}]}, max_open=5)
    with pytest.raises(ToolError, match="No file requests"):
        open_requests({"file_requests": []}, max_open=5)


def test_folders_show_their_files_open_with_their_view_or_closed() -> None:
    folder = FolderInfo("source-1", "farm", "papers", "read the minutes first")
    files = [_open("farm/a.md", 1.0), FileState("file-b", "farm/b.pdf", "source-1")]
    text = render_directories([folder], files, max_files_open=5, char_limit=100)
    assert "- current_files_open=1\n- max_files_open=5" in text
    assert '<directory name="farm">\n<description>papers</description>' in text
    assert '<file status="open" name="farm/a.md">' in text and "<value>\nx\n</value>" in text
    assert '<file status="closed" name="farm/b.pdf">' in text


def test_semantic_results_group_passages_under_their_file() -> None:
    hits = [("farm/t.pdf", "Spring tides\nNeap tides", 0.9), ("farm/t.pdf", "storms", 0.5),
            ("farm/m.md", "floats", 0.1)]  # fmt: skip
    text = format_semantic("tides", hits)
    assert text.startswith("Found 3 semantic matches in 2 files for query: 'tides'")
    assert "=== farm/t.pdf (passage #1) (score: 0.900) ===\n  Spring tides\n  Neap tides" in text
    assert format_semantic("x", []) == "No semantic matches found for query: 'x'"


def test_an_upload_is_judged_by_its_content_type_then_its_name() -> None:
    assert kind_for("application/pdf; charset=binary", "x.bin").media_type == PDF
    assert kind_for("application/octet-stream", "notes.DOCX").media_type == DOCX
    assert kind_for(None, "readme.md").strategy == "sentences"
    assert kind_for("application/octet-stream", "tool.exe") is None
    # Kept as Letta records it: by the name first.
    assert stored_kind("text/plain", "notes.md").strategy == "sentences"
    assert stored_kind("application/pdf", "scan").media_type == PDF
