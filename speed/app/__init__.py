"""An interactive page over a trained run: `python -m speed.app RUN_DIR` serves it locally.

Pick a checkpoint, classes, guidance scale, sampler, steps, eta, seed and images per class; the
page shows the progress of sampling, then the grid (one row per class, one column per seed) and
the denoising strip (x0 predictions along the trajectory), each with a PNG download.

Python's standard-library HTTP server and one static page, not Gradio: Gradio 6 pins pillow < 13
(installing it downgrades a core dependency of this project) and brings about twenty packages
(FastAPI, uvicorn, pandas, ...); its page also loads web fonts from the internet. The app has
five parts, each small: `studio` (the run and one generation, over `speed.generation`), `server`
(the HTTP endpoints and the background job), `limits` (what one request may ask for, the
server's timeouts), `page.html`, and `client` (the same endpoints from Python, used by the
tests). Nothing else in the project imports this package; docs/app.md documents the API.
"""
