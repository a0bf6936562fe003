"""Other libraries' models on ddetr's op.

- `ddetr.integrations.transformers`: every multi-scale deformable attention in an HF
  transformers model (`kernelize(model)`), and ddetr as the `kernels` package's
  "MultiScaleDeformableAttention" layer (`register()`).

Nothing here is imported by `import ddetr`: each integration imports its library only
when called.
"""
