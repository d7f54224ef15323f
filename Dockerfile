# CUDA runtime image for the API and the workers.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3-pip curl \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 atcon
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models models
COPY worker worker
COPY service service
RUN python3.11 -m pip install --no-cache-dir .
USER atcon
ENV ATCON_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["atcon", "serve", "--host", "0.0.0.0", "--port", "8000"]
