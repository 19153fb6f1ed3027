"""What a v6nat daemon shows about itself: Prometheus metrics, health endpoints, the status snapshot.

    stats.py       ControlPlaneStats: the facts only the daemon knows (thread-safe)
    snapshot.py    take_snapshot(dp, stats): every figure at one time, and readiness
    exposition.py  the Prometheus collector and the /metrics body
    server.py      /metrics, /healthz, /readyz, /status over HTTP, and fetch_status (its client)

Must not import: docker, pyroute2, the daemon, the reconciler, the CLI or the lab. The datapath is
read only through the methods of `snapshot.DatapathReader`.
"""
