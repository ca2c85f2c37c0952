"""The command line's exit codes (README, "Command line"). argparse exits with 2 for a
malformed command line too."""

from __future__ import annotations

EXIT_PARTLY = 1  # it ran, but part of it failed: ids not found, bad lines in an import
EXIT_INVALID = 2  # an argument or input was refused; nothing was changed
EXIT_MODEL = 3  # the embedding model could not be loaded
EXIT_STORE = 4  # the store: held by another process, built with another model, or damaged
EXIT_NO_SPACE = 5  # the disk is full
EXIT_FILE = 6  # a file could not be read or written
EXIT_INTERRUPTED = 130
