"""The command line. Every command but serve calls the same domain service as the server.

`parser.py` is the grammar and `checks.py` checks the arguments before anything loads. Each
command is a small function of the parsed arguments, found in the tables below:
`memory_commands.py` (remember, recall, forget, show, list, stats), `store_commands.py`
(doctor, repair, reindex, import, export), `serve.py`, `context.py` and `completion.py`.
`output.py` is how they print; `exit_codes.py` names what they return."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from subcog.cli import memory_commands, store_commands, token_commands
from subcog.cli.checks import checked
from subcog.cli.completion import completion, completion_script
from subcog.cli.context import (
    CONTEXT_LIMIT,
    CONTEXT_LINE_CHARS,
    CONTEXT_LOCK_WAIT_S,
    CONTEXT_MAX_CHARS,
    context,
)
from subcog.cli.exit_codes import (
    EXIT_FILE,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_MODEL,
    EXIT_NO_SPACE,
    EXIT_PARTLY,
    EXIT_STORE,
)
from subcog.cli.parser import COMMANDS, WITHOUT_JSON, build_parser, commands, subcommands
from subcog.cli.serve import serve, ui
from subcog.config import Settings
from subcog.errors import (
    InvalidInput,
    InvalidSetting,
    ModelMismatch,
    ModelUnavailable,
    NoSpace,
    StoreBusy,
    SubcogError,
    full_disk,
)

if TYPE_CHECKING:
    from subcog.memory import Memory

__all__ = [
    "COMMANDS",
    "CONTEXT_LIMIT",
    "CONTEXT_LINE_CHARS",
    "CONTEXT_LOCK_WAIT_S",
    "CONTEXT_MAX_CHARS",
    "EXIT_FILE",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_MODEL",
    "EXIT_NO_SPACE",
    "EXIT_PARTLY",
    "EXIT_STORE",
    "WITHOUT_JSON",
    "build_parser",
    "commands",
    "completion_script",
    "main",
    "subcommands",
]

log = logging.getLogger("subcog")

# name -> the command, for those that open the store themselves or need none.
ALONE: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "serve": serve,
    "context": context,
    "completion": completion,
    "doctor": store_commands.doctor,
    "repair": store_commands.repair,
    "reindex": store_commands.reindex,
    "token": token_commands.token,
    "ui": ui,
}
# name -> the command, given the Memory opened for it.
RUN: dict[str, Callable[[argparse.Namespace, Memory], int]] = {
    "remember": memory_commands.remember,
    "recall": memory_commands.recall,
    "forget": memory_commands.forget,
    "show": memory_commands.show,
    "list": memory_commands.list_memories,
    "stats": memory_commands.stats,
    "import": store_commands.import_memories,
    "export": store_commands.export,
}


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run a command. `settings`, for a program that runs subcog with settings of its own
    (a test's storage limits); else they come from the environment."""
    args = build_parser().parse_args(argv)
    command = args.command or "serve"
    try:
        return _main(command, args, settings)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except InvalidInput as exc:
        return _fail(str(exc), EXIT_INVALID)
    except InvalidSetting as exc:
        return _fail(str(exc), EXIT_INVALID)
    except ModelUnavailable as exc:
        return _fail(str(exc), EXIT_MODEL)
    except (ModelMismatch, StoreBusy) as exc:
        return _fail(str(exc), EXIT_STORE)
    except NoSpace as exc:
        return _fail(str(exc), EXIT_NO_SPACE)
    except SubcogError as exc:
        return _fail(str(exc), EXIT_PARTLY)
    except Exception as exc:  # a user's situation, not a bug: one sentence, no traceback
        if full_disk(exc):
            where = _written_under(command, args)
            return _fail(f"No space left on device: free space under {where}", EXIT_NO_SPACE)
        if isinstance(exc, OSError):
            return _fail(_os_error(exc), EXIT_FILE)
        log.debug("unexpected error", exc_info=True)
        return _fail(
            f"unexpected error ({type(exc).__name__}: {exc}). Run again with "
            "SUBCOG_LOG_LEVEL=DEBUG to see where, and report it.",
            EXIT_PARTLY,
        )


def _fail(sentence: str, code: int) -> int:
    print(f"subcog: {sentence}", file=sys.stderr)
    return code


def _written_under(command: str, args: argparse.Namespace) -> Path:
    if command == "export" and args.file is not None:
        return Path(args.file).resolve().parent
    return Settings.from_env().data_dir


def _os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


def _big_blocks_back_to_the_system() -> None:
    """glibc serves a block of 128 kB or more with a mapping of its own, returned to the system
    when freed, until a freed one raises that threshold to its size (up to 32 MB): from then on
    such blocks come from the heap, which keeps what is freed. Reading 100,000 memories
    allocates and frees many of them; with the threshold fixed, the peak RSS of that read is
    lower (benchmarks/README.md, "Design figures behind the code"). A no-op elsewhere than on
    glibc."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return  # not glibc
    m_mmap_threshold = -3
    mallopt(m_mmap_threshold, 128 * 1024)


def _main(command: str, args: argparse.Namespace, given: Settings | None) -> int:
    os.umask(0o077)  # whatever subcog creates is readable by its owner only
    # numpy's OpenBLAS spreads even a matrix-vector product over every core, and its threads
    # spin afterwards, in the way of the next embedding and of Lance: one thread is faster here
    # (benchmarks/README.md, "Where the time went" and "Design figures behind the code"). Read
    # when numpy loads, which is later.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Arrow's own allocator (mimalloc) keeps what the in-memory copy frees when it reads
    # fragments again; glibc's gives it back (benchmarks/README.md, "One Lance"). Read when
    # pyarrow first allocates, which is later.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    _big_blocks_back_to_the_system()
    settings = given or Settings.from_env()
    # subcog's own lines at SUBCOG_LOG_LEVEL; other libraries' only when they warn (ONNX
    # Runtime's quantiser explains every tensor at INFO, on the root logger).
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s subcog %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("subcog").setLevel(settings.log_level)
    checked(command, args, settings)
    if command in ALONE:
        return ALONE[command](args, settings)
    return _run(command, args, settings)


def _run(command: str, args: argparse.Namespace, settings: Settings) -> int:
    from subcog.memory import open_memory

    memory = open_memory(settings)
    try:
        code = RUN[command](args, memory)
    finally:
        memory.finish_erasure()  # every process that opens the store finishes it
    if code == 0 and memory.damaged():
        # What could be read was done; the warning on stderr said what could not, and what to
        # run. The exit code tells a script.
        return EXIT_STORE
    return code
