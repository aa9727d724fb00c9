"""``python -m vlm_agent.cli`` (what ``torchrun ... -m vlm_agent.cli train`` runs)."""

import sys

from vlm_agent.cli.main import main

sys.exit(main())
