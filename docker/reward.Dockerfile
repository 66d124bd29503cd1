# The reward service: sandboxed code execution (bubblewrap) + math verification.
# No torch, no GPU.
#
# Runs as ROOT on purpose: the sandbox's fork servers switch each run to its
# own unprivileged uid (61000+; root ignores RLIMIT_NPROC, so a fork bomb is
# only stopped by a uid of its own), mount a per-run tmpfs (CAP_SYS_ADMIN) and
# create namespaces with bwrap (no user namespace needed as root). compose.yaml
# grants exactly CAP_SYS_ADMIN + seccomp/apparmor unconfined for that; see
# docs/security.md for what the sandbox does and does not protect against.
FROM python:3.11.11-slim-bookworm

ARG DEBIAN_FRONTEND=noninteractive
# bubblewrap: the sandbox; g++: C++ tasks; Debian's python3 runs untrusted
# Python (the sandbox binds /usr only and hides /usr/local).
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap=0.8.0-2+deb12u1 g++=4:12.2.0-3 python3 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/aspo
COPY pyproject.toml README.md ./
COPY aspo aspo
COPY services services
COPY sandbox sandbox
COPY orchestrator orchestrator
COPY trainer trainer
RUN pip install --no-cache-dir ".[reward]"

EXPOSE 8090
CMD ["aspo", "reward", "serve", "--host", "0.0.0.0"]
