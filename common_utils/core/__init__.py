"""Core plumbing every lab uses: runtime (profile, sizes, device), models, artifacts (atomic saves and
`ensure`), generation, monitor (memory, time, metrics files), plots, processes (launch and stop)."""
