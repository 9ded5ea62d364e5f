"""Encrypted credentials: a secrets file safe to commit, its key kept outside the project.

``vault`` (the file format and its encryption) and ``names`` (variable names, the shell lines
that export them) are pure; ``keys`` (OS keychain, key file) and ``store`` (locking, atomic
writes) do the I/O. ``blocktrain secrets`` (``blocktrain.cli.secrets``) is the front end.
"""
