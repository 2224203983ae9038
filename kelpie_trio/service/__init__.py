"""The use cases behind the API: create a block, list agents, send a message...

CRUD goes straight to the store, one transaction per use case, so a request
either happens whole or not at all; anything that runs an agent goes through
the dispatcher. Input arrives as parsed JSON and is validated here (through
the models' converter), so the API layer stays a thin shell and the whole
service runs inside the simulator.

Layout in the store (kelpie_trio/storage/keys.py): each record at
`<subspace>(id)` (chunked when large), and a creation-order index per
collection, `<index>(created_us, id)`, which gives stable pagination even for
records created in the same microsecond.
"""

from __future__ import annotations

from kelpie_trio.service.agent_files import FolderAgentCases
from kelpie_trio.service.agentfile import AgentFileCases
from kelpie_trio.service.agents import AGENT_INDEX, TAG_INDEX, AgentCases
from kelpie_trio.service.archives import ARCHIVE_INDEX, ArchiveCases
from kelpie_trio.service.blocks import BLOCK_AGENTS, BLOCK_INDEX
from kelpie_trio.service.common import MAX_PAGE, Page, window
from kelpie_trio.service.context_overview import ContextCases
from kelpie_trio.service.conversations import ConversationCases
from kelpie_trio.service.file_worker import FileWorkerCases
from kelpie_trio.service.identities import IdentityCases
from kelpie_trio.service.mcp_servers import McpServerCases
from kelpie_trio.service.messages import MessageCases
from kelpie_trio.service.messages_all import AllMessageCases
from kelpie_trio.service.passages import PASSAGE_INDEX, PassageCases
from kelpie_trio.service.run_stream import RunStreamCases
from kelpie_trio.service.schedules import ScheduleCases
from kelpie_trio.service.steps import StepCases

__all__ = [
    "AGENT_INDEX",
    "ARCHIVE_INDEX",
    "BLOCK_AGENTS",
    "BLOCK_INDEX",
    "MAX_PAGE",
    "PASSAGE_INDEX",
    "TAG_INDEX",
    "AgentService",
    "Page",
    "window",
]


class AgentService(
    AgentFileCases,
    AgentCases,
    PassageCases,
    ArchiveCases,
    MessageCases,
    RunStreamCases,
    IdentityCases,
    AllMessageCases,
    StepCases,
    McpServerCases,
    ConversationCases,
    ContextCases,
    ScheduleCases,
    FolderAgentCases,
    FileWorkerCases,
):
    """Every use case of the API, over one store (see the modules of this package)."""
