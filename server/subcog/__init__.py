"""subcog: long-term semantic memory for AI assistants, served over MCP."""

__version__ = "0.1.0"
