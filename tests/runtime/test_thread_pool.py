"""The TVM thread pool's settings: ours by default, the environment's where it has them."""

import os

import pytest

from compiler.runtime import host


@pytest.mark.unit
def test_the_pool_gets_a_thread_per_core_and_a_short_spin_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.setenv("TVM_THREAD_POOL_SPIN_COUNT", "7")
    host.configure_thread_pool()
    assert os.environ["TVM_NUM_THREADS"] == str(host.physical_cores())
    assert os.environ["TVM_THREAD_POOL_SPIN_COUNT"] == "7"  # the user's value stands
    monkeypatch.delenv("TVM_THREAD_POOL_SPIN_COUNT")
    host.configure_thread_pool()
    assert int(os.environ["TVM_THREAD_POOL_SPIN_COUNT"]) == host.POOL_SPIN_YIELDS < 300_000  # TVM's own default
