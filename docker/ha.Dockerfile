# The Home Authority service (pseudonym admission); separate from the FL server by design.
FROM python:3.11-slim
RUN useradd --create-home app
WORKDIR /app
COPY --chown=app:app pyproject.toml README.md ./
COPY --chown=app:app bastionfl ./bastionfl
RUN python -m pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
 && python -m pip install --no-cache-dir .
USER app
ENTRYPOINT ["bastionfl", "ha"]
