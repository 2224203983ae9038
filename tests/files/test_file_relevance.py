"""semantic_search_files on a small labeled set: the corpus of tests/data/files uploaded to a
folder, parsed, chunked and indexed by the real worker and search layer (BM25; no embedding
model), and questions whose answer is in one known file. The figures go in the README."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from kelpie_trio.env import RealEnv
from kelpie_trio.files.kinds import kind_for
from kelpie_trio.service import AgentService
from kelpie_trio.service.file_worker import FileSettings
from kelpie_trio.storage import MemoryStore

FILES = Path(__file__).resolve().parents[1] / "data" / "files"
DOCUMENTS = ["handbook.md", "notice.html", "operations.pdf", "tides.pdf", "minutes.docx"]

# A question and the file that answers it; worded as someone would ask, not as the text is.
LABELED = [
    ("when does the kelp farm open", "handbook.md"),
    ("who guards the longlines at night", "handbook.md"),
    ("are life vests required past the breakwater", "handbook.md"),
    ("harbor closed for dredging in March", "notice.html"),
    ("where do east pier moorings move", "notice.html"),
    ("which day do harvest crews rotate", "operations.pdf"),
    ("how many kilograms do the drying racks hold", "operations.pdf"),
    ("who gets told about torn nets", "operations.pdf"),
    ("engine service interval in hours", "operations.pdf"),
    ("spring tides and the lower longlines", "tides.pdf"),
    ("what do divers check after a storm", "tides.pdf"),
    ("neap tide nursery lines", "tides.pdf"),
    ("did the cooperative approve another boat", "minutes.docx"),
    ("who orders the replacement floats", "minutes.docx"),
    ("budget for floats in euros", "minutes.docx"),
    ("who checks the winch", "minutes.docx"),
    # Fewer words in common with the answer.
    ("skippers unable to shift their boat", "notice.html"),
    ("deadline to record the catch each day", "operations.pdf"),
    ("what should never be done solo", "handbook.md"),
    ("which radio channel stays open", "handbook.md"),
    ("what gets harvested first at low water", "tides.pdf"),
    ("action items from the meeting", "minutes.docx"),
]
HIT_AT_1_FLOOR = 0.8  # measured 0.909 (20 of 22)
HIT_AT_3_FLOOR = 0.9  # measured 0.955 (21 of 22)


async def test_semantic_search_files_finds_the_file_that_answers(nursery: trio.Nursery) -> None:
    store = MemoryStore()
    await nursery.start(store.run)
    service = AgentService(store, RealEnv())
    folder = (await service.create_folder({"name": "farm"})).id
    for name in DOCUMENTS:
        kind = kind_for(None, name)
        await service.upload_file(folder, name, kind.media_type, (FILES / name).read_bytes())
    while await service.process_some_files(FileSettings()):
        pass
    agent = (await service.create_agent({"name": "reader"})).agent.id
    await service.attach_folder(agent, folder, True)

    first = top3 = 0
    for question, answer in LABELED:
        text = await service.run_file_tool(
            agent, "semantic_search_files", {"query": question, "limit": 3}
        )
        ranked = re.findall(r"=== farm/(\S+) \(passage #\d+\)", text)
        first += bool(ranked) and ranked[0] == answer
        top3 += answer in ranked[:3]
    hit1, hit3 = first / len(LABELED), top3 / len(LABELED)
    print(f"\nsemantic_search_files, BM25, {len(LABELED)} questions: hit@1 {hit1:.3f}, "
          f"hit@3 {hit3:.3f}")  # fmt: skip
    assert hit1 >= HIT_AT_1_FLOOR and hit3 >= HIT_AT_3_FLOOR
