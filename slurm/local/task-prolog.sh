#!/bin/sh
# TaskProlog of the multi-node development cluster (scripts/local-slurm copies it to
# DIR/etc/task-prolog): slurmstepd runs it before each task and exports what it prints. Every
# job gets node-local scratch, SLURM_TMPDIR=DIR/nodes/<node>/tmp/<job id>, as sites provide it;
# a node's scratch is its own, and `down --purge` removes it with DIR.
set -eu
state=$(cd "$(dirname "$0")/.." && pwd)
scratch="$state/nodes/$SLURMD_NODENAME/tmp/$SLURM_JOB_ID"
mkdir -p "$scratch"
echo "export SLURM_TMPDIR=$scratch"
