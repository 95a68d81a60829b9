"""The inference pipeline, one stage per module:

```
sources.Item ─> decode (batching.iter_batches: threads) ─> [detect + align: next] ─> predict (backends) ─> sink
               └──────────────── stream.LocalStream | ray_stream.RayStream ─────────────────┘      shards.ShardStore
```

- `job.InferJob`: every option of a run, frozen and validated once.
- `stream`: `BatchResult` and the `PredictionStream` interface; `LocalStream` decodes in
  threads and predicts in-process. `ray_stream.RayStream` does the same work on Ray.
- `rows`: `BatchResult` -> Parquet record batch (the predictions schema lives in `schemas`).
- `shards.ShardStore`: shard naming, the run signature, resume, final assembly.
- `run.run_infer(job)`: wires them together.
"""
