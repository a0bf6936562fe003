"""pytest's hooks for the shipped benchmark suite (`ddetr bench`)."""

from ddetr.bench.harness import pytest_benchmark_update_machine_info  # noqa: F401
