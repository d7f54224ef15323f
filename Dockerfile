# CUDA runtime image for the API and the workers (docker-compose.yml runs them all).
# g++ and the Python headers are for ATCON_DETECT_COMPILE (torch.compile builds kernels).
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common curl \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
       python3.11-dev g++ \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/atcon
ENV PATH=/opt/atcon/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
COPY models models
COPY worker worker
COPY synthetic synthetic
COPY service service
RUN pip install .
# a non-root user owns the data directory (a fresh named volume inherits this owner)
RUN useradd --create-home --uid 10001 atcon && mkdir /data && chown atcon:atcon /data
USER atcon
ENV ATCON_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["atcon", "serve", "--host", "0.0.0.0", "--port", "8000"]
