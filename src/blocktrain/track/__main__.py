"""``python -m blocktrain.track replay [FILE ...]``."""

import sys

from blocktrain.track.run import replay_main

raise SystemExit(replay_main(sys.argv[1:]))
