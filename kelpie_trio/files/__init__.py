"""Folders of files that agents read: what a file is, how it is parsed, cut and shown.

Everything in this package is sans-IO (plain functions over attrs values): the kinds
of file served and how each is read (kinds.py), parsing bytes to text with maintained
libraries (parse.py), the numbered lines an agent sees and the windows it opens
(lines.py), and what the file tools decide: which open files to close, what grep
finds, how open files appear in the agent's context (tools.py). The service
(service/folders.py, service/agent_files.py) and the worker (service/file_worker.py)
do the I/O around them.
"""
