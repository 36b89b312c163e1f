"""Config paths of the runner tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FLOW_CONFIG = str(REPO / "configs/image/animals/flow/base.yaml")
FLOW_MASKDIT_CONFIG = str(REPO / "configs/image/animals/flow/maskdit.yaml")
REPA_CONFIG = str(REPO / "configs/image/animals/flow/repa.yaml")
