"""Storage: the LanceDB table of memories, its searches, upkeep and erasure, and model switches.

    store.py    the store of one data directory: what the domain asks of storage
    table.py    the one LanceDB handle: schema, model check, indexes, locks, retries
    schema.py   the columns, a row, a filter
    search.py   one search interface, in memory (mirror.py, blocks.py) or by LanceDB
    results.py  what a search finds; lexical.py, a query's lexical reference
    fulltext.py LanceDB's full-text search through its async API; analysis.py, its analyser
    upkeep.py   compaction, erasure (erasure.py), index folding (indexes.py), scheduling
                (scheduler.py); for a server, in a child process (aside.py)
    health.py   damage found while serving; damage.py reads every file; repair.py rebuilds
    reindex.py  a model switch
    limits.py   the tuning values, one dataclass passed in

Imports point one way: nothing here imports the domain (memory.py), the model or MCP. Import
from the modules: this package imports nothing, so that reading the settings (limits.py) does
not load LanceDB.
"""
