"""Sweeps on SLURM (or locally) through submitit: executors, checkpointable run jobs, sweep state and
the `asae sweep` / `asae status` commands. `slurm/local_cluster.sh` starts a real single-node SLURM."""
