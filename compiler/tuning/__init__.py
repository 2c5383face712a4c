"""Autotuning: tasks (one per kernel variant), MetaSchedule's search over our schedules' knobs,
the record database, measuring over TVM RPC (and the device side of it), replayed timings, and
the comparison of our space with MetaSchedule's generic one."""
