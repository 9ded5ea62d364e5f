"""The chaos harness: randomized fault episodes against real jobs, and invariants checked after.

Each episode launches the launcher tests' small deterministic DDP job
(``tests/integration/slurm/project/restartable.py``: two ranks, Gloo, a checkpoint every few
steps, a metric every ten) with ``slurm-launch``, on ``--executor local`` or on the local Slurm
cluster of ``scripts/local-slurm`` (one node, or two), injects a random schedule of faults
drawn from a seed, recovers the run the way a user would (``slurm-launch --run-id`` once it has
left the queue unfinished), then checks the invariants of :mod:`chaos.invariants` on what it
observed: samples taken while the episode ran, the run record, MLflow, ``slurm-status``,
``sacct`` (or a local job's state file), the logs and the checkpoints.

It lives in the test tree, not in ``scripts/``, because it is test infrastructure built on the
suite's own helpers (``launch_project.py``, ``slurm_service.py``, ``mlflow_service.py``) and
needs the dev dependencies (the full ``mlflow`` for its server, ``pytest`` for the cluster
helper); the suite's integration test ``tests/integration/chaos/test_chaos_sample.py`` runs a
fixed-seed sample of it, and ``make chaos`` as many episodes as asked::

    PYTHONPATH=tests .venv/bin/python -m chaos --episodes 20 --seed 7 --executor local

The pure parts, unit-tested in ``tests/unit/test_chaos_*.py``, are apart from the I/O:

- :mod:`chaos.plan`: the fault kinds, where each applies, and an episode's schedule from a seed;
- :mod:`chaos.invariants`: the observations of an episode and the checks, pure functions;
- :mod:`chaos.report`: the table of episodes, faults by kind, violations and recovery times;
- :mod:`chaos.driver`: the I/O (services, launches, faults, sampling, collecting);
- :mod:`chaos.__main__`: the command line.

docs/chaos.md says what each invariant means.
"""
