"""The benchmark suite that ships with ddetr: the op, the MSDeformAttn module and the full
model (inference and a training step), each against its reference (the pure-PyTorch op, HF
transformers' DeformableDetr where installed), with CPU thread scaling. pytest-benchmark
files, run by `ddetr bench` (needs the `bench` extra: pip install 'ddetr[bench]').

- harness.py: devices, dtypes, peak memory, the same-run speed-up over the reference
- shapes.py: the benchmark shapes and their inputs
- hf_peer.py: HF transformers' model with a ddetr model's weights
- test_bench_{op,module,model,threads}.py: the suites
"""
