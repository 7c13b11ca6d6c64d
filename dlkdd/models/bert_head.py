"""Temporal heads on a trunk map (B,D,T',H',W'): BERT late temporal modelling, or plain averaging.

``D`` is the trunk's ``feature_dim`` (:mod:`dlkdd.models.backbones`; 512 for R(2+1)D, whose numbers
the diagram below uses); both heads are built with it (``dim``) and refuse a map of another width.

BERT head (Kalfaoglu, Kalkan & Alatan, "Late Temporal Modeling in 3D CNN Architectures with
BERT for Action Recognition", ECCV-W 2020; used by DarkLight, Chen et al. 2021, and DL-KDD):

    feat (B,512,T',H',W') --spatial mean--> tokens (B,T',512)
    [CLS; tokens] + learned position embeddings, dropout 0.1        -> (B,1+T',512)
    1 pre-LayerNorm transformer layer: x = x + Drop(MHA(LN(x)))      (8 heads)
                                       x = x + Drop(FFN(LN(x)))      (512 -> 2048 -> 512, GELU)
    CLS output (B,512) --dropout 0.8--> Linear -> logits (B,C)

As in the reference implementation (BERT5 of the authors' LateTemporalModeling3DCNN code),
during training each temporal token is kept as an attention *key* with probability
``token_keep`` (0.8; the CLS token always kept); in eval mode all tokens are kept.

Position embeddings are learned for up to ``max_tokens`` temporal tokens (default 64: a
64-frame clip gives T' = 8); a longer sequence raises a ValueError naming the limit.

AvgHead: feat (B,512,T',H',W') --mean over T',H',W'--> (B,512) --dropout--> Linear -> (B,C).

Both: ``forward(feat, return_features=False)`` -> logits, or ``(logits, feature (B,512))``
where the feature is the vector fed to the final dropout + linear.
"""
from __future__ import annotations

import torch
from torch import nn

from dlkdd.errors import ClipTooLongError

__all__ = ["BertLayer", "BertHead", "AvgHead"]


class BertLayer(nn.Module):
    """One pre-LN transformer encoder layer: (B,L,D) -> (B,L,D).

    ``key_keep``: optional bool (B,L), False where a token must not be attended to as a key.
    """

    def __init__(self, dim: int = 512, heads: int = 8, ffn: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn, dim))
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_keep: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        pad = None if key_keep is None else ~key_keep
        a, _ = self.attn(h, h, h, key_padding_mask=pad, need_weights=False)
        x = x + self.drop1(a)
        return x + self.drop2(self.ffn(self.norm2(x)))


class BertHead(nn.Module):
    """BERT temporal head: (B,dim,T',H',W') -> logits (B,num_classes). See the module docstring."""

    def __init__(self, dim: int = 512, num_classes: int = 400, layers: int = 1, heads: int = 8,
                 ffn: int = 2048, dropout: float = 0.1, head_dropout: float = 0.8,
                 token_keep: float = 0.8, max_tokens: int = 64):
        super().__init__()
        if not 0.0 < token_keep <= 1.0:
            raise ValueError(f"token_keep must be in (0, 1], got {token_keep}")
        self.dim = dim
        self.token_keep = float(token_keep)
        self.max_tokens = int(max_tokens)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, max_tokens + 1, dim))
        self.embed_drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(BertLayer(dim, heads, ffn, dropout) for _ in range(layers))
        self.dropout = nn.Dropout(head_dropout)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, feat: torch.Tensor, return_features: bool = False):
        if feat.dim() != 5 or feat.shape[1] != self.dim:
            raise ValueError(f"BertHead expects a map (B,{self.dim},T',H',W'), got {tuple(feat.shape)}")
        b, _, t = feat.shape[:3]
        if t > self.max_tokens:
            raise ClipTooLongError(f"BertHead: {t} temporal tokens exceed its {self.max_tokens} position "
                                   "embeddings; use fewer frames (clip.frames) or build it with a larger max_tokens")
        tokens = feat.mean(dim=(3, 4)).transpose(1, 2)  # (B,T',D)
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1) + self.pos_embed[:, : t + 1]
        x = self.embed_drop(x)
        keep = None
        if self.training and self.token_keep < 1.0:
            keep = torch.rand(b, t + 1, device=x.device) < self.token_keep
            keep[:, 0] = True  # CLS always attended
        for layer in self.layers:
            x = layer(x, keep)
        cls = x[:, 0]
        logits = self.fc(self.dropout(cls))
        return (logits, cls) if return_features else logits


class AvgHead(nn.Module):
    """Average head: (B,dim,T',H',W') -> mean over T',H',W' -> dropout -> Linear -> (B,num_classes)."""

    def __init__(self, dim: int = 512, num_classes: int = 400, head_dropout: float = 0.8):
        super().__init__()
        self.dim = dim
        self.dropout = nn.Dropout(head_dropout)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, feat: torch.Tensor, return_features: bool = False):
        if feat.dim() != 5 or feat.shape[1] != self.dim:
            raise ValueError(f"AvgHead expects a map (B,{self.dim},T',H',W'), got {tuple(feat.shape)}")
        pooled = feat.mean(dim=(2, 3, 4))
        logits = self.fc(self.dropout(pooled))
        return (logits, pooled) if return_features else logits
