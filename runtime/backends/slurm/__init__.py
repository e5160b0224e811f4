"""Slurm: the srun backend, one step per task (``srun.py``), and the throwaway single-node cluster for the baseline and tests (``local.py`` over ``slurm-local.sh``)."""
