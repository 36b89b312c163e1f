"""A trained run served over HTTP for many clients: `python -m speed.serve RUN_DIR`.

FastAPI on uvicorn (`app`): POST /generate, health and readiness probes, Prometheus metrics,
limits, an optional bearer token and a graceful shutdown. Requests that arrive within a short
window and share sampler, steps, guidance and eta are sampled as one batch (`batcher`), each
image from its own seed's generator and the model on fixed-size batches (`fixed_rows`), so a
batched request gets the pixels it would get alone. The model is loaded once per process
(`engine`) on one of the `backends` (fp32, bf16, compile, ONNX Runtime). Scale-out is several
such processes behind a Kubernetes Service (deploy/kubernetes/), `loadtest` measures QPS and
latency, and the page (`speed.app`) can draw through it. docs/serve.md documents it all.
"""
