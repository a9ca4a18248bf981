"""What a load worker counts (``loadclient.Stats``) and the harness adds up over the workers
(``procs.Workers.totals``): one list for both.  A module of its own because the load client
installs the epoll reactor on import and the harness must not."""

COUNTS = (
    "connected",
    "failed",
    "closed",
    "matched",
    "searching",
    "mispaired",
    "delivered",
    "blocked",
    "notices",
    "chats",
    "ended",
)
