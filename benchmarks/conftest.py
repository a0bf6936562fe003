"""The lab's benchmarks (peer comparisons, inference, results): they share the harness of the
suite that ships with ddetr (`ddetr.bench`, run by `ddetr bench`).

Run: `pytest benchmarks --benchmark-json benchmarks/results/<device>-lab.json`; the shipped
suite: `ddetr bench --output benchmarks/results/<device>.json`; then
`python benchmarks/report.py benchmarks/results/*.json`.
"""

from ddetr.bench.harness import DEVICE_DTYPES, devices, run_case, sync  # noqa: F401  (`from conftest import ...`)
