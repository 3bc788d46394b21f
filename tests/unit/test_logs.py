"""The CLI's libp2p log level survives libp2p's own logging setup, which runs on import."""

from __future__ import annotations

import subprocess
import sys


def test_level_chosen_before_libp2p_is_imported_still_holds_after() -> None:
    code = (
        "import logging, sys\n"
        "from p2pinfer.logs import set_libp2p_level\n"
        "set_libp2p_level(logging.CRITICAL)\n"
        "assert 'libp2p' not in sys.modules\n"
        "import p2pinfer.net.host\n"  # imports libp2p, whose setup_logging() resets its logger
        "print(logging.getLogger('libp2p').level)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == str(50)
