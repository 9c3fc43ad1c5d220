"""Engine-independent stage bodies: each works on one shard or on the whole score table.

Engines decide where these run (a local process pool, Spark executors);
the stages decide what happens, so both engines give the same results.
"""
