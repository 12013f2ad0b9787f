"""Controller, heads and the encoder hook on the fake backbone."""

import torch
import pytest

from hra.adapter.controller import Controller, ControllerConfig
from hra.adapter.heads import HeadConfig, make_head
from hra.adapter.hook import HeadApplier, HRAHook
from tests.hra.fake_backbone import fake_utterances, make_fake_foundation

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def foundation():
    return make_fake_foundation()


def _randomize(head, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return head


def test_controller_step_follows_the_indrnn_equation():
    torch.manual_seed(0)
    ctrl = Controller(ControllerConfig(d_model=6, d_controller=4))
    x, h = torch.randn(2, 3, 6), torch.rand(2, 3, 4)
    expected = torch.relu(x @ ctrl.proj.weight.T + ctrl.u * h + ctrl.proj.bias)
    torch.testing.assert_close(ctrl.step(x, h), expected)
    torch.testing.assert_close(ctrl.step(x, None), torch.relu(ctrl.proj(x)))
    assert torch.all(ctrl.u == 0.5)


def test_controller_config_rejects_bad_dims():
    with pytest.raises(ValueError):
        ControllerConfig(d_model=0)


def test_decoder_steps_use_their_own_parameters_and_need_include_decoder():
    torch.manual_seed(0)
    ctrl = Controller(ControllerConfig(d_model=6, d_controller=4, include_decoder=True))
    x, h = torch.randn(2, 3, 6), torch.rand(2, 1, 4)  # a (B, 1, C) start state broadcasts over tokens
    expected = torch.relu(x @ ctrl.proj_dec.weight.T + ctrl.u_dec * h + ctrl.proj_dec.bias)
    torch.testing.assert_close(ctrl.step(x, h, decoder=True), expected)
    assert not torch.allclose(ctrl.step(x, h, decoder=True), ctrl.step(x, h))
    with pytest.raises(ValueError, match="decoder"):
        Controller(ControllerConfig(d_model=6, d_controller=4)).step(x, h, decoder=True)


@pytest.mark.parametrize("head_type", ["linear", "ffn"])
@torch.no_grad()
def test_untrained_head_reproduces_the_base_exactly(foundation, head_type):
    enc = foundation.backbone.prepare([w for w, _ in fake_utterances(3)])
    base = foundation.backbone.encode(enc)
    head = foundation.new_head(head_type, hidden=16)
    with_head = foundation.backbone.encode(enc, HRAHook(foundation.controller, head, frames=enc.frames))
    assert torch.equal(base, with_head)


def test_head_parameter_counts():
    assert make_head(HeadConfig("linear", 64, 384)).num_parameters == 384 * 64
    assert make_head(HeadConfig("linear", 64, 384, bias=True)).num_parameters == 384 * 64 + 384
    assert make_head(HeadConfig("ffn", 64, 384, hidden=128)).num_parameters == 64 * 128 + 128 + 128 * 384 + 384


def test_a_trained_head_changes_the_encoder_output(foundation):
    enc = foundation.backbone.prepare([w for w, _ in fake_utterances(2)])
    head = _randomize(foundation.new_head("linear"), 1)
    hook = HRAHook(foundation.controller, head, frames=enc.frames, keep_states=True)
    out = foundation.backbone.encode(enc, hook)
    assert not torch.allclose(out, foundation.backbone.encode(enc))
    assert len(hook.states) == 4 and hook.states[0].shape[-1] == 8


@torch.no_grad()
def test_batched_heads_match_one_sample_at_a_time(foundation):
    """Different heads (linear with and without bias, FFN of two widths, shared, none) in one pass == alone."""
    utts = fake_utterances(8, seed=3)
    lin_a = _randomize(foundation.new_head("linear"), 1)
    lin_b = _randomize(foundation.new_head("linear"), 2)
    ffn_a = _randomize(foundation.new_head("ffn", hidden=16), 3)
    ffn_b = _randomize(foundation.new_head("ffn", hidden=24), 4)
    lin_bias = _randomize(make_head(HeadConfig("linear", 8, 32, bias=True)), 5)
    heads = [lin_a, None, ffn_a, lin_b, lin_a, ffn_b, None, lin_bias]
    bb = foundation.backbone
    enc = bb.prepare([w for w, _ in utts])
    batched = bb.encode(enc, HRAHook(foundation.controller, heads, frames=enc.frames))
    for i, (wav, _) in enumerate(utts):
        one = bb.prepare([wav])
        hook = HRAHook(foundation.controller, heads[i], frames=one.frames) if heads[i] is not None else None
        alone = bb.encode(one, hook)
        t = int(one.frames[0])
        torch.testing.assert_close(batched[i, :t], alone[0, :t], atol=1e-5, rtol=1e-5)


def test_head_applier_gradients_reach_every_samples_head():
    heads = [make_head(HeadConfig("linear", 4, 6)) for _ in range(2)]
    applier = HeadApplier([heads[0], heads[1], heads[0]], batch_size=3)
    applier(torch.rand(3, 5, 4)).sum().backward()
    assert all(h.out.weight.grad is not None and h.out.weight.grad.abs().sum() > 0 for h in heads)


def test_head_applier_rejects_wrong_batch_size():
    with pytest.raises(ValueError):
        HeadApplier([None, None], batch_size=3)


def test_head_config_validates():
    with pytest.raises(ValueError):
        HeadConfig("conv")


@pytest.fixture(scope="module")
def decoder_foundation():
    return make_fake_foundation(include_decoder=True)


def test_decoder_hook_only_with_heads_and_include_decoder(foundation, decoder_foundation):
    enc = foundation.backbone.prepare([w for w, _ in fake_utterances(2)])
    head = _randomize(foundation.new_head("linear"), 1)
    hook = HRAHook(foundation.controller, head, frames=enc.frames)
    foundation.backbone.encode(enc, hook)
    assert hook.decoder_hook() is None  # encoder-only controller
    no_heads = HRAHook(decoder_foundation.controller, [None, None], frames=enc.frames)
    decoder_foundation.backbone.encode(enc, no_heads)
    assert no_heads.decoder_hook() is None  # nobody has a head: the base decoder exactly
    with pytest.raises(RuntimeError):
        HRAHook(decoder_foundation.controller, head, frames=enc.frames).decoder_hook()


@torch.no_grad()
def test_decoder_hook_changes_the_loss_only_through_a_trained_head(decoder_foundation):
    f = decoder_foundation
    utts = fake_utterances(3, seed=5)
    enc = f.backbone.prepare([w for w, _ in utts])
    targets = [f.backbone.token_ids(t) for _, t in utts]
    base = f.backbone.teacher_forced_loss(f.backbone.encode(enc), targets, frames=enc.frames)

    def loss(head):
        hook = HRAHook(f.controller, head, frames=enc.frames)
        out = f.backbone.encode(enc, hook)
        return f.backbone.teacher_forced_loss(out, targets, frames=enc.frames, decoder_hook=hook.decoder_hook())

    assert torch.equal(loss(f.new_head("linear")), base)  # zero output projection: exactly the base
    assert not torch.allclose(loss(_randomize(f.new_head("linear"), 2)), base)


@torch.no_grad()
def test_decoder_hook_start_state_ignores_batch_padding(decoder_foundation):
    """A sample's decoder start state (mean of its last encoder state over its own frames) does not depend on
    what it is batched with; select() keeps each row's head and state."""
    f = decoder_foundation
    utts = fake_utterances(3, seed=7)
    heads = [_randomize(f.new_head("linear"), 1), _randomize(f.new_head("ffn", hidden=16), 2), None]
    enc = f.backbone.prepare([w for w, _ in utts])
    hook = HRAHook(f.controller, heads, frames=enc.frames)
    f.backbone.encode(enc, hook)
    batched = hook.decoder_hook()
    for i in (0, 1):
        one = f.backbone.prepare([utts[i][0]])
        alone = HRAHook(f.controller, heads[i], frames=one.frames)
        f.backbone.encode(one, alone)
        torch.testing.assert_close(batched.select([i]).start, alone.decoder_hook().start, atol=1e-5, rtol=1e-5)
    picked = batched.select([2, 0])
    assert picked.heads == [None, heads[0]]
    x = torch.randn(2, 3, f.backbone.d_model)
    out = picked(0, x, x)
    torch.testing.assert_close(out[0], x[0])  # no head: no correction
    assert not torch.allclose(out[1], x[1])


def test_heads_made_with_a_seed_share_their_first_projection_while_other_threads_seed_torch():
    """A worker trains two heads in two threads: ``make_head(seed=0)`` must give the FFN's first projection of every
    head made with seed 0 (the population prior's) while another thread seeds torch's global generator under
    ``GLOBAL_RNG_LOCK`` (as the training loop does). Without the lock, 5 of 120 heads got another projection here, with
    the interpreter switching threads every microsecond."""
    import sys
    import threading

    from hra.adapter.heads import GLOBAL_RNG_LOCK, HeadConfig, make_head

    config = HeadConfig(head_type="ffn", d_controller=64, d_model=384, hidden=128)
    expected = make_head(config, seed=0).inp.weight.detach().clone()
    wrong: list[int] = []

    def work(i: int) -> None:
        for _ in range(30):
            if i % 2:
                if not torch.equal(make_head(config, seed=0).inp.weight, expected):
                    wrong.append(i)
            else:
                with GLOBAL_RNG_LOCK:
                    torch.manual_seed(1000 + i)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
