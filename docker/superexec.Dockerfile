# SuperExec image with BastionFL pre-installed: it runs the ServerApp and the ClientApps.
# Flower's base image already holds flwr; install the rest with a CPU build of torch.
ARG FLWR_VERSION=1.41.0
FROM flwr/superexec:${FLWR_VERSION}
WORKDIR /app
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app bastionfl ./bastionfl
RUN sed -i 's/.*flwr\[simulation\].*//' pyproject.toml \
 && python -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && python -m pip install --no-cache-dir .
ENTRYPOINT ["flower-superexec"]
