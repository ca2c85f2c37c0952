"""subcog's MCP server on stdio, as Claude Desktop starts it from the bundle (manifest.json).

The bundle holds subcog's wheel and a pyproject.toml that names it; the host installs both
with uv (server type "uv") and runs this file. Settings come from the manifest's user_config.
"""

import os
import sys

# A host that leaves an optional setting unset may pass the placeholder itself: subcog then
# uses its own default.
for name in ("SUBCOG_SCOPE", "SUBCOG_DATA_DIR"):
    if os.environ.get(name, "").startswith("${user_config."):
        del os.environ[name]

from subcog.cli import main  # noqa: E402  (after the environment is set)

sys.exit(main(["serve"]))
