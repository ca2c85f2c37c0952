"""subcog: long-term semantic memory for AI assistants, served over MCP."""

import os as _os

__version__ = "0.1.0"

# ONNX Runtime keeps a telemetry queue (a device id and details of the system) under
# ~/.cache/Microsoft/DeveloperTools from the moment it is imported, unless told not to: subcog
# writes nothing outside its data and cache directories.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
