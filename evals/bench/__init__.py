"""Speed benchmarks: `python -m evals.bench encoder|embedder|mlm|retriever` (also `retriever bench ...`).

- encoder: our encoder vs transformers' ModernBertModel (sdpa) on ModernBERT-base-shaped random weights, on a ragged
  long and a ragged short batch: tokens/s and their ratio, peak memory, max output difference, GFLOP/s.
- embedder: load_embedder(dir) vs stock SentenceTransformer(dir): docs/s on SciFact abstracts plus long documents.
- mlm: MLM training tokens/s, our packed unpadded steps vs transformers' padded batches, same data and weights.
- retriever: indexing throughput against the pure encoder, and warm/cold search latency.

One module per benchmark; cli.py holds the commands, their options and result tables; timing.py and corpus.py
what several benchmarks share.
"""
