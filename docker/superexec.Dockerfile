# SuperExec image with BastionFL pre-installed: it runs the ServerApp and the ClientApps (runtime dependency
# installation is disabled on the SuperLink). Flower's base image holds the pinned flwr and runs as uid 49999.
ARG FLWR_VERSION=1.42.0
FROM flwr/superexec:${FLWR_VERSION}
WORKDIR /app
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app bastionfl ./bastionfl
RUN sed -i 's/.*flwr\[simulation\].*//' pyproject.toml \
 && python -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && python -m pip install --no-cache-dir .
ENTRYPOINT ["flower-superexec"]
