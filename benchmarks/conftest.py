"""The lab's benchmarks (peer comparisons, inference, results): they share the harness of the
suite that ships with ddetr (`ddetr.bench`, run by `ddetr bench`), and its machine-info hook
(the CPU's family, model and caches in each results file).

Run: `pytest benchmarks --benchmark-json benchmarks/results/<device>-lab.json`; the shipped
suite: `ddetr bench --output benchmarks/results/<device>.json`; then
`python benchmarks/report.py benchmarks/results/*.json`.
"""

from ddetr.bench.harness import (  # noqa: F401  (`from conftest import ...`; the hook)
    DEVICE_DTYPES,
    devices,
    pytest_benchmark_update_machine_info,
    run_case,
    sync,
)
