"""``python -m blocktrain.track replay [FILE ...]``."""

import sys

from blocktrain.track.replay import replay_main

raise SystemExit(replay_main(sys.argv[1:]))
