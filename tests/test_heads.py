"""Temporal heads: BERT (CLS token, position embeddings, token masking) and average."""
from __future__ import annotations

import pytest
import torch

from dlkdd.models.bert_head import AvgHead, BertHead


@pytest.mark.parametrize("head_cls", [BertHead, AvgHead])
@pytest.mark.parametrize("tokens", [(1, 1, 1), (2, 4, 3), (8, 7, 7)])
def test_shapes_and_features(head_cls, tokens):
    torch.manual_seed(0)
    head = head_cls(512, 5).eval()
    feat = torch.randn(3, 512, *tokens)
    logits = head(feat)
    assert logits.shape == (3, 5)
    logits2, f = head(feat, return_features=True)
    assert f.shape == (3, 512)
    assert torch.equal(logits, logits2)
    assert torch.allclose(head.fc(f), logits, atol=1e-6)  # eval: dropout is identity


def test_avg_head_is_the_mean():
    head = AvgHead(16, 3).eval()
    feat = torch.randn(2, 16, 3, 2, 2)
    _, f = head(feat, return_features=True)
    assert torch.allclose(f, feat.mean(dim=(2, 3, 4)))


def test_bert_uses_temporal_order_and_cls():
    torch.manual_seed(0)
    head = BertHead(64, 4, heads=8, ffn=128).eval()
    feat = torch.randn(2, 64, 4, 2, 2)
    out = head(feat)
    # position embeddings: reversing the tokens changes the output (average pooling would not)
    assert not torch.allclose(head(feat.flip(2)), out, atol=1e-5)
    # only the spatial mean of each token matters
    spatial_perm = feat.flip(3)
    assert torch.allclose(head(spatial_perm), out, atol=1e-5)


def test_bert_eval_deterministic_and_train_masking_changes_output():
    torch.manual_seed(0)
    # no dropouts, so any train-mode change comes from the token masking alone
    head = BertHead(64, 4, heads=8, ffn=128, dropout=0.0, head_dropout=0.0, token_keep=0.5)
    feat = torch.randn(4, 64, 8, 1, 1)
    head.eval()
    a, b = head(feat), head(feat)
    assert torch.equal(a, b)
    head.train()
    outs = [head(feat) for _ in range(4)]
    assert any(not torch.allclose(o, a, atol=1e-5) for o in outs)
    # token_keep = 1: training mode without dropout equals eval mode
    full = BertHead(64, 4, heads=8, ffn=128, dropout=0.0, head_dropout=0.0, token_keep=1.0)
    full.load_state_dict(head.state_dict())
    full.train()
    assert torch.allclose(full(feat), a, atol=1e-5)


def test_bert_masking_keeps_cls():
    """With token_keep tiny, almost every temporal token is masked; CLS still attends to itself
    so the output stays finite."""
    torch.manual_seed(0)
    head = BertHead(32, 3, heads=4, ffn=64, token_keep=1e-6).train()
    out = head(torch.randn(5, 32, 6, 2, 2))
    assert torch.isfinite(out).all()


def test_bert_too_many_tokens_and_bad_input():
    head = BertHead(32, 3, heads=4, ffn=64, max_tokens=4)
    head(torch.randn(1, 32, 4, 1, 1))
    with pytest.raises(ValueError, match="max_tokens"):
        head(torch.randn(1, 32, 5, 1, 1))
    with pytest.raises(ValueError, match="expects a map"):
        head(torch.randn(1, 16, 4, 1, 1))
    with pytest.raises(ValueError, match="token_keep"):
        BertHead(32, 3, heads=4, token_keep=0.0)


def test_bert_gradients_reach_every_parameter():
    torch.manual_seed(0)
    head = BertHead(64, 4, heads=8, ffn=128).train()
    feat = torch.randn(3, 64, 4, 2, 2, requires_grad=True)
    head(feat).logsumexp(1).sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert feat.grad.abs().sum() > 0
