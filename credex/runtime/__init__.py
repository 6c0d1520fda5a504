"""What both servers run on: ports and their limits, the RPC runtime (refusals to status
codes, group commit, access logs), storage, audit, health, metrics, logs and serving a
process. Needs the `server` extra."""
