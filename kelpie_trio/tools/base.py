"""The base tools: the ones every server has, which agents get unless they opt out.

Each is written here as a Python stub with the signature Letta's agents know
(same names, parameters and types, so prompts and tool rules written for Letta
still fit) and a docstring of our own; its JSON schema is derived from the stub
by the same code as a custom tool's. The stubs never run: what a base tool does
is the agent loop's business, which recognizes them by name.

Base tools are not stored. They exist on every node from the first moment, with
ids derived from their names, so all nodes agree without writing anything:
`tool-<uuid>` where the uuid is uuid5(BASE_TOOL_NAMESPACE, name) with the version
bits set to 4, which keeps the id in the `tool-<uuid4>` form Letta validates.

Which base tools a new agent gets (`include_base_tools`, true by default) follows
its agent type as Letta 0.16.8 does. The archival tools are left out of new agents
(Letta deprecates them there) but stay attachable:

- letta_v1_agent (the default): conversation_search, memory_insert, memory_replace
  (it answers in plain text, so no send_message);
- memgpt_v2_agent: the same plus send_message;
- sleeptime_agent: memory_insert, memory_replace, memory_rethink, memory_finish_edits;
- any agent with enable_sleeptime: send_message, conversation_search,
  archival_memory_search (its memory is edited by its sleep-time companion);
- react_agent, workflow_agent and the voice agents: none (Letta gives the voice
  agents voice tools this server does not have);
- every other type (memgpt_agent, split_thread_agent): send_message,
  conversation_search, core_memory_append, core_memory_replace, memory,
  memory_apply_patch.

The web tools (web_search, fetch_webpage: Letta's `letta_builtin` tools) are given to no
agent by default; they are attached by name or id, and run in kelpie_trio/tools/web.py.
The file tools (open_files, grep_files, semantic_search_files: Letta's `letta_files_core`)
come with a folder: attaching one gives them, detaching the last takes them away
(service/agent_files.py). The multi-agent tools (Letta's `letta_multi_agent_core`) come with
`include_multi_agent_tools` on create, or by name; they run in agent/multi_agent.py.
"""

from __future__ import annotations

import textwrap
import uuid

from kelpie_trio.models.tools import Tool
from kelpie_trio.tools.schema import derive_tool_schema

__all__ = [
    "BASE_TOOLS",
    "BASE_TOOLS_BY_ID",
    "BASE_TOOLS_BY_NAME",
    "BASE_TOOL_NAMESPACE",
    "MULTI_AGENT_TOOLS",
    "base_tool_id",
    "base_tool_names",
]

BASE_TOOL_NAMESPACE = uuid.UUID("6b656c70-6965-5472-696f-746f6f6c7321")

_NOT_RUN = 'raise NotImplementedError("a base tool: the agent loop carries it out")'

# (name, tool_type, source), in the order they are listed.
_STUBS: list[tuple[str, str, str]] = [
    (
        "send_message",
        "letta_core",
        '''
        def send_message(message: str) -> None:
            """Say something to the user: this is the only way the user hears from you.

            Args:
                message (str): What to say. Any Unicode text, emoji included.
            """
        ''',
    ),
    (
        "conversation_search",
        "letta_core",
        '''
        def conversation_search(
            query: str | None = None,
            roles: list[Literal["assistant", "user", "tool"]] | None = None,
            limit: int | None = None,
            start_date: str | None = None,
            end_date: str | None = None,
        ) -> str | None:
            """Search earlier messages of this conversation, including ones out of context.

            Args:
                query (str | None): Words or an idea to look for. Leave it out to filter by
                    date and role alone.
                roles (list | None): Only messages from these senders.
                limit (int | None): At most this many results; the server picks when left out.
                start_date (str | None): Only messages from this moment on, inclusive. ISO 8601:
                    "2024-05-01" (the whole day counts) or "2024-05-01T09:30".
                end_date (str | None): Only messages up to this moment, inclusive; a date alone
                    includes that whole day.

            Returns:
                str: The matching messages with their times.
            """
        ''',
    ),
    (
        "archival_memory_insert",
        "letta_core",
        '''
        def archival_memory_insert(content: str, tags: list[str] | None = None) -> str | None:
            """Keep a piece of information in archival memory, your long-term store.

            Archival memory outlives every conversation and is searched by meaning. Write
            entries that make sense on their own (a fact, a decision, a summary), not
            fragments of chat, and tag them so they are easy to find again.

            Args:
                content (str): The information to keep, complete in itself.
                tags (list[str] | None): Labels for the entry, such as ["travel", "plans"].

            Returns:
                str: A confirmation naming the stored entry.
            """
        ''',
    ),
    (
        "archival_memory_search",
        "letta_core",
        '''
        def archival_memory_search(
            query: str,
            tags: list[str] | None = None,
            tag_match_mode: Literal["any", "all"] = "any",
            top_k: int | None = None,
            start_datetime: str | None = None,
            end_datetime: str | None = None,
        ) -> str | None:
            """Find entries in archival memory whose meaning is close to a query.

            Describe what you need in plain words; the best matches come first. Narrow the
            search with tags or a time range when you know them.

            Args:
                query (str): What you are looking for, in natural language.
                tags (list[str] | None): Only entries carrying these tags.
                tag_match_mode (str): "any" for entries with at least one of the tags, "all"
                    for entries with every one of them.
                top_k (int | None): How many entries to return at most (10 when left out).
                start_datetime (str | None): Only entries stored at or after this ISO 8601 time.
                end_datetime (str | None): Only entries stored at or before this ISO 8601 time.

            Returns:
                str: The matching entries with their ids, times and text.
            """
        ''',
    ),
    (
        "core_memory_append",
        "letta_memory_core",
        '''
        def core_memory_append(agent_state: "AgentState", label: str, content: str) -> str | None:
            """Add text to the end of one of your core memory blocks.

            Args:
                label (str): The label of the block to extend.
                content (str): The text to add, on a new line. Any Unicode text.
            """
        ''',
    ),
    (
        "core_memory_replace",
        "letta_memory_core",
        '''
        def core_memory_replace(
            agent_state: "AgentState", label: str, old_content: str, new_content: str
        ) -> str | None:
            """Swap a passage of a core memory block for new text; empty new text deletes it.

            Args:
                label (str): The label of the block to edit.
                old_content (str): The exact text to take out.
                new_content (str): The text to put in its place. Any Unicode text.
            """
        ''',
    ),
    (
        "memory",
        "letta_memory_core",
        '''
        def memory(
            agent_state: "AgentState",
            command: str,
            path: str | None = None,
            file_text: str | None = None,
            description: str | None = None,
            old_string: str | None = None,
            new_string: str | None = None,
            insert_line: int | None = None,
            insert_text: str | None = None,
            old_path: str | None = None,
            new_path: str | None = None,
        ) -> str | None:
            """Manage your memory blocks, addressed as paths like /memories/<label>.

            Args:
                command (str): What to do: "create" a block, "str_replace" text in one,
                    "insert" text at a line, "delete" a block, or "rename" one (or, with
                    path and description, change its description).
                path (str | None): The block to act on, as /memories/<label>.
                file_text (str | None): The first text of a block you create.
                description (str | None): What a block is for (create; rename with path).
                old_string (str | None): str_replace: the exact text to take out.
                new_string (str | None): str_replace: the text to put in its place.
                insert_line (int | None): insert: the line after which the text goes (0 for
                    the top; leave it out, or -1, for the end).
                insert_text (str | None): insert: the text to add.
                old_path (str | None): rename: the block's current path.
                new_path (str | None): rename: its new path.

            Returns:
                str: What changed, or the block's new text.
            """
        ''',
    ),
    (
        "memory_apply_patch",
        "letta_memory_core",
        '''
        def memory_apply_patch(agent_state: "AgentState", label: str, patch: str) -> str:
            """Edit memory with a patch in a simple unified-diff form.

            A patch without headers edits the block named by label: in each hunk, lines
            starting with a space are context, "-" lines are taken out and "+" lines put in;
            "@@" lines separate hunks. Headers act on several blocks at once:
            "*** Add Block: <label>" (an optional "Description: ..." line, then "+" lines),
            "*** Delete Block: <label>", "*** Update Block: <label>" (then hunks), and
            "*** Move to: <label>" (renames the block of the header before it). Never include
            the line numbers shown beside your memory.

            Args:
                label (str): The block to patch when the patch has no headers; "" otherwise.
                patch (str): The patch.

            Returns:
                str: The block's new text, or a list of what the headers did.
            """
        ''',
    ),
    (
        "memory_insert",
        "letta_sleeptime_core",
        '''
        def memory_insert(
            agent_state: "AgentState", label: str, new_string: str, insert_line: int = -1
        ) -> str:
            """Put new lines into a memory block at a chosen line.

            Args:
                label (str): The label of the block to edit.
                new_string (str): The text to insert, without any line-number prefixes.
                insert_line (int): Insert after this line; 0 puts the text first, and the
                    default -1 puts it at the end.

            Returns:
                str: The block's new text.
            """
        ''',
    ),
    (
        "memory_replace",
        "letta_sleeptime_core",
        '''
        def memory_replace(
            agent_state: "AgentState", label: str, old_string: str, new_string: str
        ) -> str:
            """Make a precise edit to a memory block: one exact string becomes another.

            The old text has to occur exactly once in the block. For rewriting most of a
            block, use memory_rethink instead.

            Args:
                label (str): The label of the block to edit.
                old_string (str): The text to replace, matching the block exactly (whitespace
                    too), without the line numbers shown to you.
                new_string (str): The replacement text, without line-number prefixes; empty
                    removes the old text.

            Returns:
                str: The block's new text.
            """
        ''',
    ),
    (
        "memory_rethink",
        "letta_sleeptime_core",
        '''
        def memory_rethink(agent_state: "AgentState", label: str, new_memory: str) -> str:
            """Rewrite a memory block from scratch, to reorganize or condense it.

            Meant for sweeping changes; small edits are safer with memory_replace or
            memory_insert. A block that does not exist yet is created.

            Args:
                label (str): The label of the block to rewrite.
                new_memory (str): The block's complete new text, keeping whatever still holds.

            Returns:
                str: The block's new text.
            """
        ''',
    ),
    (
        "memory_finish_edits",
        "letta_sleeptime_core",
        '''
        def memory_finish_edits(agent_state: "AgentState") -> None:
            """Say that you are done editing memory for now: this ends your turn."""
        ''',
    ),
    (
        "web_search",
        "letta_builtin",
        '''
        def web_search(
            query: str,
            num_results: int = 10,
            category: Literal["company", "research paper", "news", "pdf", "github", "tweet",
                              "personal site", "linkedin profile", "financial report"]
            | None = None,
            include_text: bool = False,
            include_domains: list[str] | None = None,
            exclude_domains: list[str] | None = None,
            start_published_date: str | None = None,
            end_published_date: str | None = None,
            user_location: str | None = None,
        ) -> str:
            """Search the web (with Exa) and get back the best pages for a query.

            Each result has its title, URL, date and author, the passages that match best
            and a short summary; ask for the full text only when you need it, as it is long.

            Args:
                query (str): What to look for, in plain words.
                num_results (int): How many results, 1 to 100 (10 when left out).
                category (str | None): Keep to one kind of content, such as "news" or
                    "research paper".
                include_text (bool): Also return each page's full text.
                include_domains (list[str] | None): Only results from these domains.
                exclude_domains (list[str] | None): No results from these domains.
                start_published_date (str | None): Only pages published after this ISO date.
                end_published_date (str | None): Only pages published before this ISO date.
                user_location (str | None): A two-letter country code for local results.

            Returns:
                str: JSON with the query and its results.
            """
        ''',
    ),
    (
        "fetch_webpage",
        "letta_builtin",
        '''
        def fetch_webpage(url: str) -> str:
            """Read a web page: download it and return its text, as markdown where it can.

            Args:
                url (str): The page's address, an http or https URL.

            Returns:
                str: The page's main text.
            """
        ''',
    ),
    (
        "open_files",
        "letta_files_core",
        '''
        def open_files(
            agent_state: "AgentState", file_requests: list[dict], close_all_others: bool = False
        ) -> str:
            """Open files of your folders so their text shows in your context, whole or a
            range of lines. At most your max_files_open limit are open at once: opening more
            closes the ones you used least recently.

            Each request names a file as your context lists it ("folder/name.pdf") and may
            give `offset` (the first line, counted from 0) and `length` (how many lines).

            Args:
                file_requests (list[dict]): The files to open, such as
                    [{"file_name": "docs/guide.md"}, {"file_name": "docs/api.md",
                    "offset": 100, "length": 50}].
                close_all_others (bool): Close every other open file first.

            Returns:
                str: Which files were opened, and which were closed to make room.
            """
        ''',
    ),
    (
        "grep_files",
        "letta_files_core",
        '''
        def grep_files(
            agent_state: "AgentState",
            pattern: str,
            include: str | None = None,
            context_lines: int | None = 1,
            offset: int | None = None,
        ) -> str:
            """Find lines of your files that match a keyword or regular expression (case
            does not matter), with lines around each; 20 matches a page.

            Args:
                pattern (str): The keyword or regular expression to look for.
                include (str | None): Only files whose name matches this pattern or glob,
                    such as "*.md".
                context_lines (int | None): Lines to show before and after each match.
                offset (int | None): Matches to skip, to see the next page (20, 40...).

            Returns:
                str: How many matches in which files, then the matches of this page.
            """
        ''',
    ),
    (
        "semantic_search_files",
        "letta_files_core",
        '''
        def semantic_search_files(agent_state: "AgentState", query: str, limit: int = 5) -> str:
            """Find the passages of your files closest in meaning to a query, when you do
            not know the exact words.

            Args:
                query (str): What to look for.
                limit (int): At most this many passages (5 when left out, 50 at most).

            Returns:
                str: The best passages, each under the name of its file.
            """
        ''',
    ),
    (
        "send_message_to_agent_and_wait_for_reply",
        "letta_multi_agent_core",
        '''
        def send_message_to_agent_and_wait_for_reply(message: str, other_agent_id: str) -> str:
            """Ask another agent something and wait for its answer. The other agent is told
            who is asking, so the message needs no introduction; use this when you need its
            reply before you go on.

            Args:
                message (str): What to say to the other agent.
                other_agent_id (str): The id of the agent to ask.

            Returns:
                str: The other agent's reply.
            """
        ''',
    ),
    (
        "send_message_to_agent_async",
        "letta_multi_agent_core",
        '''
        def send_message_to_agent_async(message: str, other_agent_id: str) -> str:
            """Tell another agent something without waiting for an answer (a notification).
            The other agent is told who sent it, so the message needs no introduction.

            Args:
                message (str): What to tell the other agent.
                other_agent_id (str): The id of the agent to tell.

            Returns:
                str: Confirmation that the message was sent.
            """
        ''',
    ),
    (
        "send_message_to_agents_matching_tags",
        "letta_multi_agent_core",
        '''
        def send_message_to_agents_matching_tags(
            message: str, match_all: list[str], match_some: list[str]
        ) -> list[str]:
            """Ask every other agent with the right tags the same thing, and collect their
            answers. An agent receives it if it has every tag of `match_all` and at least
            one tag of `match_some` (an empty list asks for nothing).

            Args:
                message (str): What to say to each matching agent.
                match_all (list[str]): Tags an agent must all have.
                match_some (list[str]): Tags of which an agent must have at least one.

            Returns:
                list[str]: One entry per matching agent, with its id and its reply.
            """
        ''',
    ),
    (
        "pause_heartbeats",
        "letta_core",
        '''
        def pause_heartbeats(minutes: int) -> str | None:
            """Stop timed heartbeats for a while; messages and other events still wake you.

            Args:
                minutes (int): How long to pause them, up to 360 (six hours).
            """
        ''',
    ),
]

# Agent types that get no base tools, and the sets the others get (see the module docstring).
# The archival tools are attachable but no longer given by default (Letta 0.16 deprecates them).
_CORE = ["send_message", "conversation_search"]
_V2 = [*_CORE, "memory_insert", "memory_replace"]
_V1 = [n for n in _V2 if n != "send_message"]
_CORE_MEMORY = ["core_memory_append", "core_memory_replace", "memory", "memory_apply_patch"]
_SLEEPTIME = ["memory_insert", "memory_replace", "memory_rethink", "memory_finish_edits"]
_SLEEPTIME_CHAT = ["send_message", "conversation_search", "archival_memory_search"]
# Letta's multi-agent tools (`include_multi_agent_tools`, or attached by name).
MULTI_AGENT_TOOLS = (
    "send_message_to_agent_and_wait_for_reply",
    "send_message_to_agents_matching_tags",
    "send_message_to_agent_async",
)
_NO_BASE_TOOLS = frozenset(
    {"react_agent", "workflow_agent", "voice_convo_agent", "voice_sleeptime_agent"}
)


def base_tool_id(name: str) -> str:
    """The fixed id of the base tool `name`, the same on every node."""
    return f"tool-{uuid.UUID(bytes=uuid.uuid5(BASE_TOOL_NAMESPACE, name).bytes, version=4)}"


def _base_tool(name: str, tool_type: str, stub: str) -> Tool:
    source = textwrap.dedent(stub).strip() + "\n    " + _NOT_RUN + "\n"
    if "Literal[" in source:
        source = "from typing import Literal\n\n\n" + source
    derived = derive_tool_schema(source, name=name)
    return Tool(
        id=base_tool_id(name),
        name=name,
        tool_type=tool_type,
        description=derived.description,
        source_type="python",
        tags=[tool_type],
        source_code=source,
        json_schema=derived.json_schema,
    )


def _with_request_items(tool: Tool) -> Tool:
    """open_files' requests as Letta describes them: objects with a file name and an
    optional line range (a stub's `list[dict]` says only "objects")."""
    if tool.name != "open_files":
        return tool
    schema = dict(tool.json_schema or {})
    parameters = dict(schema.get("parameters") or {})
    properties = dict(parameters.get("properties") or {})
    requests = dict(properties.get("file_requests") or {})
    requests["items"] = {
        "type": "object",
        "properties": {
            "file_name": {"type": "string", "description": "Name of the file to open"},
            "offset": {"type": "integer", "description": "First line to show, from 0"},
            "length": {"type": "integer", "description": "How many lines to show"},
        },
        "required": ["file_name"],
    }
    properties["file_requests"] = requests
    parameters["properties"] = properties
    schema["parameters"] = parameters
    tool.json_schema = schema
    return tool


BASE_TOOLS: tuple[Tool, ...] = tuple(_with_request_items(_base_tool(*stub)) for stub in _STUBS)
BASE_TOOLS_BY_ID: dict[str, Tool] = {t.id: t for t in BASE_TOOLS}
BASE_TOOLS_BY_NAME: dict[str, Tool] = {t.name: t for t in BASE_TOOLS}


def base_tool_names(
    agent_type: str, *, enable_sleeptime: bool | None = None, multi_agent: bool = False
) -> list[str]:
    """The base tools a new agent of `agent_type` gets, in listing order; `multi_agent`:
    the multi-agent tools too (Letta's `include_multi_agent_tools`)."""
    extra = list(MULTI_AGENT_TOOLS) if multi_agent else []
    if agent_type in _NO_BASE_TOOLS:
        wanted: list[str] = []
    elif agent_type == "sleeptime_agent":
        wanted = _SLEEPTIME
    elif enable_sleeptime:
        wanted = _SLEEPTIME_CHAT
    elif agent_type == "letta_v1_agent":
        wanted = _V1
    elif agent_type == "memgpt_v2_agent":
        wanted = _V2
    else:
        wanted = [*_CORE, *_CORE_MEMORY]
    return [t.name for t in BASE_TOOLS if t.name in wanted or t.name in extra]


# Letta gives agents rules for their base tools unless told not to: the tools that answer
# or finish end the turn (a one-way message to another agent too), the others keep it going
# (a memgpt agent then needs no heartbeat after a memory edit); the waiting multi-agent
# tools get none. Models that do better without are left out, as Letta leaves them.
_TERMINAL_BASE = ("send_message", "send_message_to_agent_async", "memory_finish_edits")
_CONTINUE_BASE = frozenset(
    {"conversation_search", "archival_memory_insert", "archival_memory_search",
     "core_memory_append", "core_memory_replace", "memory", "memory_apply_patch",
     "memory_insert", "memory_replace", "memory_rethink"}
)  # fmt: skip
_NO_RULES_MODELS = ("claude-4-sonnet", "claude-3-5-sonnet", "gpt-5", "gemini-2.5-pro")


def wants_base_tool_rules(
    agent_type: str, model: str, tool_rules: list | None, asked: bool | None
) -> bool:
    """Whether a new agent gets the base tool rules (`include_base_tool_rules`, as Letta
    0.16.8 settles it: off for letta_v1_agent unless it has rules of its own, off for the
    models that do without, unless asked for)."""
    if asked is not None:
        return asked
    if agent_type == "letta_v1_agent" and not tool_rules:
        return False
    excluded = any(k in model for k in _NO_RULES_MODELS) and "mini" not in model
    return not (excluded and agent_type != "sleeptime_agent")


def base_tool_rules(tool_names: list[str]) -> list[dict[str, str]]:
    """The base tool rules for an agent with these tools, in their order."""
    rules = []
    for name in tool_names:
        if name in _TERMINAL_BASE:
            rules.append({"type": "exit_loop", "tool_name": name, "prompt_template": None})
        elif name in _CONTINUE_BASE:
            rules.append({"type": "continue_loop", "tool_name": name, "prompt_template": None})
    return rules
