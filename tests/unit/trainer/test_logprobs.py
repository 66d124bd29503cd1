"""Chunked LM-head log-probs: same values and gradients as the full-logits computation, less memory."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trainer.logprobs import auto_chunk_size, naive_token_logprobs, token_logprobs
from trainer.losses import LossInputs, compute_policy_loss


def make(n, h, v, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g) * 2).to(dtype).requires_grad_()
    weight = torch.randn(v, h, generator=g).to(dtype).requires_grad_()
    targets = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, targets


def grads(fn, hidden, weight, targets, use, temperature, seed=1, **kw):
    """Values and (hidden, weight) gradients of a random linear function of the outputs."""
    g = torch.Generator().manual_seed(seed)
    c_lp, c_ent = torch.randn(hidden.shape[0], generator=g), torch.randn(hidden.shape[0], generator=g)
    lp, ent = fn(hidden, weight, targets, temperature, **kw)
    objective = {"logprobs": (lp * c_lp).sum(), "entropy": (ent * c_ent).sum(),
                 "both": (lp * c_lp).sum() + (ent * c_ent).sum()}[use]
    gh, gw = torch.autograd.grad(objective, (hidden, weight))
    return lp.detach(), ent.detach(), gh, gw


@pytest.mark.parametrize("n,h,v,chunk", [(37, 16, 50, 8), (37, 16, 50, 37), (64, 32, 300, 16),
                                         (64, 32, 300, 1000), (5, 8, 1000, 2), (37, 16, 50, None)])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
@pytest.mark.parametrize("use", ["logprobs", "entropy", "both"])
def test_values_and_gradients_match_naive(n, h, v, chunk, temperature, use):
    hidden, weight, targets = make(n, h, v)
    got = grads(token_logprobs, hidden, weight, targets, use, temperature, chunk_size=chunk)
    want = grads(naive_token_logprobs, hidden, weight, targets, use, temperature)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32


def test_outputs_are_log_probabilities_and_entropies():
    hidden, weight, targets = make(20, 8, 40)
    lp, ent = token_logprobs(hidden, weight, targets, chunk_size=7)
    assert (lp <= 0).all() and (ent >= 0).all() and (ent <= torch.log(torch.tensor(40.0)) + 1e-5).all()
    all_lp = torch.stack([token_logprobs(hidden, weight, torch.full((20,), j), chunk_size=7)[0] for j in range(40)], 1)
    torch.testing.assert_close(all_lp.exp().sum(1), torch.ones(20))  # a distribution over the vocabulary


def test_frozen_head_gives_only_hidden_gradient():
    hidden, weight, targets = make(30, 8, 60)
    weight = weight.detach()
    lp, ent = token_logprobs(hidden, weight, targets, chunk_size=8)
    (lp.sum() + ent.sum()).backward()
    h2 = hidden.detach().clone().requires_grad_()
    lp2, ent2 = naive_token_logprobs(h2, weight, targets)
    (lp2.sum() + ent2.sum()).backward()
    torch.testing.assert_close(hidden.grad, h2.grad, atol=1e-4, rtol=1e-4)
    assert weight.grad is None


def test_bfloat16_inputs_give_fp32_outputs_close_to_naive():
    hidden, weight, targets = make(48, 32, 500, dtype=torch.bfloat16)
    lp, ent = token_logprobs(hidden, weight, targets, chunk_size=16)
    lp_ref, ent_ref = naive_token_logprobs(hidden, weight, targets)
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    torch.testing.assert_close(lp, lp_ref, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(ent, ent_ref, atol=2e-2, rtol=1e-2)
    (lp.sum() + ent.sum()).backward()
    assert hidden.grad.dtype == torch.bfloat16 and torch.isfinite(weight.grad.float()).all()


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_materialises_full_logits():
    n, v, chunk = 256, 512, 32
    hidden, weight, targets = make(n, 16, v)
    with LargestTensor() as probe:
        lp, ent = token_logprobs(hidden, weight, targets, chunk_size=chunk)
        (lp.sum() + ent.sum()).backward()
    assert chunk * v <= probe.largest < n * v / 4
    with LargestTensor() as naive_probe:
        lp, ent = naive_token_logprobs(hidden, weight, targets)
    assert naive_probe.largest >= n * v  # the probe does see full logits when they exist


def test_feeds_the_aspo_loss_like_the_naive_head():
    hidden, weight, targets = make(24, 16, 80)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[2, 5:] = False
    old = -torch.rand(3, 8) * 3
    adv = torch.tensor([1.0, -0.5, 2.0])
    result = []
    for fn in (lambda h, w: token_logprobs(h, w, targets, 0.8, chunk_size=5),
               lambda h, w: naive_token_logprobs(h, w, targets, 0.8)):
        h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
        lp, ent = fn(h, w)
        out = compute_policy_loss("aspo", LossInputs(lp.view(3, 8), old, adv, mask, entropy=ent.view(3, 8)),
                                  entropy_coef=0.01)
        out.loss.backward()
        result.append((out.loss.detach(), h.grad, w.grad))
    for a, b in zip(*result):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_bad_inputs_raise_clear_errors():
    hidden, weight, targets = make(4, 8, 10)
    with pytest.raises(ValueError, match="hidden size"):
        token_logprobs(hidden, weight[:, :4], targets)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(hidden, weight, targets[:3])
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match="dtype"):
        token_logprobs(hidden, weight.double(), targets)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs(hidden, weight, targets, chunk_size=0)
    with pytest.raises(ValueError, match="keep_bytes"):
        token_logprobs(hidden, weight, targets, keep_bytes=-1)


def test_auto_chunk_size_fits_the_budget():
    rows = auto_chunk_size(151936, 2)
    assert rows % 64 == 0 and rows * 151936 * 2 <= 640 * 2**20 < (rows + 64) * 151936 * 2
    assert auto_chunk_size(10**9, 4) == 64


@pytest.mark.parametrize("use", ["logprobs", "entropy", "both"])
def test_fused_kernels_match_naive_in_eager_mode(use, monkeypatch):
    """The pure-function kernels that CUDA runs (compiled there) are exact too."""
    import trainer.logprobs as mod

    monkeypatch.setattr(mod, "_use_fused", lambda *a: True)
    hidden, weight, targets = make(45, 16, 300)
    got = grads(token_logprobs, hidden, weight, targets, use, 0.7, chunk_size=16, use_compile=False)
    want = grads(naive_token_logprobs, hidden, weight, targets, use, 0.7)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_compiled_kernels_match_naive():
    """torch.compile of the fused kernels (the CUDA path) on CPU, with a ragged last chunk."""
    hidden, weight, targets = make(45, 16, 300)
    got = grads(token_logprobs, hidden, weight, targets, "both", 0.7, chunk_size=16, use_compile=True)
    want = grads(naive_token_logprobs, hidden, weight, targets, "both", 0.7)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_failed_compilation_falls_back_to_eager_and_is_reported(monkeypatch):
    import trainer.logprobs as mod

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no triton here")
        return run

    monkeypatch.setattr(mod, "_compiled", {})
    monkeypatch.setattr(mod, "COMPILE_ERRORS", {})
    monkeypatch.setattr(mod.torch, "compile", broken_compile)
    hidden, weight, targets = make(30, 8, 60)
    with pytest.warns(UserWarning, match="no triton here"):
        got = grads(token_logprobs, hidden, weight, targets, "both", 1.0, chunk_size=8, use_compile=True)
    want = grads(naive_token_logprobs, hidden, weight, targets, "both", 1.0)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert set(mod.COMPILE_ERRORS) == {"forward", "grad"}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("use", ["logprobs", "entropy", "both"])
def test_kept_and_recomputed_chunks_give_identical_gradients(fused, use, monkeypatch):
    """Keeping chunks from forward skips a matmul, never changes a bit of the result."""
    import trainer.logprobs as mod

    if fused:
        monkeypatch.setattr(mod, "_use_fused", lambda *a: True)
    hidden, weight, targets = make(45, 16, 300)
    chunk_bytes = 16 * 300 * 4 + 1
    runs = [grads(token_logprobs, hidden, weight, targets, use, 0.7, chunk_size=16, use_compile=False, keep_bytes=k)
            for k in (0, chunk_bytes, 10**9)]  # none, the last (ragged) chunk, all
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert torch.equal(a, b)
    want = grads(naive_token_logprobs, hidden, weight, targets, use, 0.7)
    for a, b in zip(runs[-1], want):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_kept_chunks_fit_the_budget_and_are_the_last_ones():
    from trainer.logprobs import _first_kept_chunk

    assert _first_kept_chunk(100, 32, 10, 0) == 100  # nothing kept
    assert _first_kept_chunk(100, 32, 10, 319) == 100  # a chunk buffer is 32 rows (320 bytes), ragged or not
    assert _first_kept_chunk(100, 32, 10, 320) == 96  # the ragged last chunk
    assert _first_kept_chunk(100, 32, 10, 959) == 64
    assert _first_kept_chunk(100, 32, 10, 10**6) == 0
    assert _first_kept_chunk(10, 32, 10, 100) == 0  # one chunk of 10 rows


def test_second_backward_recomputes_the_consumed_kept_chunks():
    hidden, weight, targets = make(40, 8, 60)
    lp, ent = token_logprobs(hidden, weight, targets, chunk_size=16, keep_bytes=10**9)
    (lp.sum() + ent.sum()).backward(retain_graph=True)
    first = hidden.grad.clone()
    hidden.grad = None
    (lp.sum() + ent.sum()).backward()
    torch.testing.assert_close(hidden.grad, first, atol=1e-6, rtol=1e-6)


def test_nothing_is_kept_without_a_backward_pass(monkeypatch):
    import trainer.logprobs as mod

    seen = []
    real = mod._first_kept_chunk
    monkeypatch.setattr(mod, "_first_kept_chunk", lambda n, *a: seen.append(real(n, *a) == n) or real(n, *a))
    hidden, weight, targets = make(40, 8, 60)
    with torch.no_grad():
        token_logprobs(hidden, weight, targets, chunk_size=16, keep_bytes=10**9)
    token_logprobs(hidden.detach(), weight.detach(), targets, chunk_size=16, keep_bytes=10**9)
    token_logprobs(hidden, weight, targets, chunk_size=16, keep_bytes=10**9)
    assert seen == [True, True, False]  # only the last call keeps chunks
