"""Async token-in/token-out client for the vLLM replicas (used by the orchestrator).

Why token ids and not text: the trainer must score exactly the tokens that
were sampled, with the behaviour log-probs they were sampled with (the
denominator of the ASPO/PPO importance ratio, arXiv 2510.06062 Eq. 3).
Re-tokenising text can produce different ids, so the chat template is applied
here (:meth:`InferenceClient.apply_chat_template`, through the server's
``/tokenize`` so it is the served tokenizer's template) and prompts go to
``/inference/v1/generate`` as ids; each sample comes back as ids with
per-token log-probs and per-token policy versions.

Routing: least requests in flight over the healthy replicas; a connection
error or 5xx marks the replica down and the request is retried elsewhere with
exponential backoff; every request has a deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from typing_extensions import Self

from services.inference.protocol import (
    Completion,
    InferenceProtocolError,
    SamplingRequest,
    parse_generate_response,
    parse_version,
)
from services.inference.replicas import NoReplicaAvailable, ReplicaPool
from services.inference.settings import InferenceClientSettings


class InferenceRequestError(RuntimeError):
    """A request failed for good (bad input answered 4xx, or retries exhausted)."""


class InferenceClient:
    """``async with InferenceClient(settings) as client: await client.generate(...)``."""

    def __init__(
        self,
        settings: InferenceClientSettings | None = None,
        pool: ReplicaPool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings or InferenceClientSettings()
        self.pool = pool or ReplicaPool(self.settings.base_urls, self.settings.health_recheck_s)
        timeout = httpx.Timeout(
            self.settings.request_timeout_s, connect=self.settings.connect_timeout_s
        )
        self.http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _call(
        self, method: str, path: str, json: dict[str, Any] | None = None, url: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """One request with routing, retries and a deadline; returns (JSON body, replica URL).

        4xx is the caller's fault: raised at once, never retried. Connection
        errors, timeouts and 5xx mark the replica down and retry on another.
        """
        s = self.settings
        tried: set[str] = set()
        last_error = "no attempt"
        for attempt in range(s.max_retries + 1):
            if attempt:
                await asyncio.sleep(s.retry_backoff_s * 2 ** (attempt - 1))
            try:
                if url is not None:
                    replica = self.pool.acquire_url(url)
                else:
                    everywhere_failed = len(tried) >= len(self.pool.replicas)
                    replica = await self.pool.acquire(
                        self.http, set() if everywhere_failed else tried
                    )
            except NoReplicaAvailable as err:
                last_error = str(err)
                continue
            try:
                resp = await asyncio.wait_for(
                    self.http.request(method, f"{replica.url}{path}", json=json),
                    timeout=s.request_timeout_s,
                )
            except (httpx.TransportError, asyncio.TimeoutError) as err:
                last_error = f"{replica.url}: {err!r}"
                self.pool.mark_down(replica, last_error)
                tried.add(replica.url)
                continue
            finally:
                self.pool.release(replica)
            if resp.status_code >= 500:
                last_error = f"{replica.url}{path} answered {resp.status_code}: {resp.text[:300]}"
                self.pool.mark_down(replica, last_error)
                tried.add(replica.url)
                continue
            if resp.status_code >= 400:
                raise InferenceRequestError(
                    f"{replica.url}{path} refused the request ({resp.status_code}): {resp.text[:500]}"
                )
            return (resp.json() if resp.content else {}), replica.url
        raise InferenceRequestError(
            f"{method} {path} failed after {s.max_retries + 1} attempts; last error: {last_error}"
        )

    async def generate_request(self, request: SamplingRequest) -> list[Completion]:
        body = request.to_vllm(self.settings.served_model_name, f"aspo-{uuid.uuid4().hex}")
        payload, url = await self._call("POST", "/inference/v1/generate", body)
        completions = parse_generate_response(payload, list(request.prompt_ids), replica=url)
        if len(completions) != request.n:
            raise InferenceProtocolError(f"asked for n={request.n}, got {len(completions)} choices")
        return completions

    async def generate(
        self,
        prompt_ids: list[int],
        n: int = 1,
        max_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        **extra: Any,
    ) -> list[Completion]:
        """Sample ``n`` completions of ``prompt_ids`` (one GRPO/ASPO group) on one replica."""
        return await self.generate_request(
            SamplingRequest(
                prompt_ids=prompt_ids,
                n=n,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                **extra,
            )
        )

    async def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Chat messages -> prompt token ids with the served tokenizer's chat template.

        Note SmolLM2's template inserts a default system prompt when none is given.
        """
        payload, _ = await self._call(
            "POST",
            "/tokenize",
            {
                "model": self.settings.served_model_name,
                "messages": messages,
                "add_generation_prompt": add_generation_prompt,
                "add_special_tokens": False,
            },
        )
        return [int(t) for t in payload["tokens"]]

    async def decode(self, token_ids: list[int]) -> str:
        payload, _ = await self._call(
            "POST",
            "/detokenize",
            {
                "model": self.settings.served_model_name,
                "tokens": list(token_ids),
            },
        )
        return str(payload["prompt"])

    async def served_versions(self) -> dict[str, int | None]:
        """Policy version each in-rotation replica reports (GET /weight_info); None = unreachable."""
        out: dict[str, int | None] = {}
        for r in self.pool.replicas:
            if not r.in_rotation:
                continue
            try:
                payload, _ = await self._call("GET", "/weight_info", url=r.url)
            except InferenceRequestError:
                out[r.url] = None  # deliberately tolerated: the caller sees which replica is down
                continue
            out[r.url] = parse_version(payload.get("weight_version"))
        return out
