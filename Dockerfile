# fedgate: one image for every role (api, worker, simulator, flower); the compose file picks the subcommand.
#   docker build -t fedgate:local .
#   docker run --rm fedgate:local --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

COPY pyproject.toml README.md constraints.txt ./
COPY gateway_core ./gateway_core
COPY workers ./workers
COPY gateway_api ./gateway_api
# At the versions the test suite passed with (constraints.txt); with the `otel` extra, so FEDGATE_OTEL_EXPORTER can
# turn traces on without another image.
RUN pip install .[otel] -c constraints.txt \
 && rm -rf /src

# Run as an unprivileged user; FEDGATE_HOME holds the per-process data (key files, logs) and is theirs.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin fedgate \
 && mkdir -p /var/lib/fedgate \
 && chown fedgate:fedgate /var/lib/fedgate
ENV FEDGATE_HOME=/var/lib/fedgate
USER fedgate
WORKDIR /home/fedgate

# api, simulator, flower
EXPOSE 8700 8790 5555
ENTRYPOINT ["fedgate"]
CMD ["--help"]
