# One image for both parts; the command picks which:
#   docker run IMAGE server --host 0.0.0.0 --port 8000
#   docker run IMAGE controller --server http://server:8000 --name node-1 --api-key-file /run/secrets/key
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ATOMIVERSE_HOME=/var/lib/atomiverse

# xtb-python and tblite wheels link against OpenMP at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY core core
COPY sdk sdk
COPY server server
COPY controller controller
RUN pip install . && rm -rf /src

RUN useradd --system --create-home --home-dir /var/lib/atomiverse --uid 10001 atomiverse
USER atomiverse
WORKDIR /var/lib/atomiverse

EXPOSE 8000
# The server answers /healthz; a controller has no port, so the check only applies to it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import os,sys,urllib.request as u; sys.exit(0) if os.environ.get('ATOMIVERSE_ROLE','server')!='server' else u.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1

ENTRYPOINT ["atomiverse"]
CMD ["server", "--host", "0.0.0.0", "--port", "8000"]
