# The inference service `python -m speed.serve` in an image; the run folder is mounted read-only
# at /model. CPU by default; for CUDA, torch's CUDA wheels (they bring the CUDA libraries, so the
# host needs only its driver and the NVIDIA container toolkit):
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t speed-serve .
# BASE may name any image with Python >= 3.10 and pip.
ARG BASE=python:3.11-slim
FROM ${BASE}
# where torch's wheels come from: cpu (small) or cu128 (CUDA 12.8)
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY requirements.txt requirements-nodeps.txt pyproject.toml README.md ./
RUN pip install ${TORCH_INDEX:+--extra-index-url ${TORCH_INDEX}} -r requirements.txt && pip install --no-deps -r requirements-nodeps.txt
COPY speed ./speed
COPY evaluations ./evaluations
COPY configs ./configs
RUN pip install --no-deps .

RUN useradd --uid 10001 --create-home speed
USER speed
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
ENTRYPOINT ["python", "-m", "speed.serve"]
CMD ["/model", "--host", "0.0.0.0", "--port", "8000"]
