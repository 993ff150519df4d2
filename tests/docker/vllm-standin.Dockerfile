# A stand-in for vllm/vllm-openai, for the end-to-end test only (scripts/docker-test.sh):
# the real image cannot be pulled here and needs a GPU. Any image with /bin/sh will do; its
# `vllm` is the vLLM test double inside the agl-vllm binary that the launcher image adds.
# Tagged agl-test/vllm-openai-standin:local, never with the official name.
ARG BASE=rust:1.95-bookworm
FROM ${BASE}
RUN printf '#!/bin/sh\nexec /usr/local/bin/agl-vllm fake-vllm "$@"\n' >/usr/local/bin/vllm \
    && chmod 755 /usr/local/bin/vllm
ENTRYPOINT ["vllm", "serve"]
