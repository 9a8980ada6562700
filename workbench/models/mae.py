"""Masked autoencoder (He et al., CVPR 2022), built on timm's ViT blocks.

Parameter names equal those of the official ``models_mae.py``, so official checkpoints load
without renaming. Read top to bottom, the methods are the paper's steps: patchify, mask, encode
the visible patches, decode with mask tokens, and the loss on masked patches.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from ..core.config import ModelConfig, check_mask_ratio, check_mask_strategy
from .kinds import model_class
from .masking import Masking, mask_patches
from .pos_embed import sincos_2d
from .source import CheckpointInfo


@dataclass
class MAEOutput:
    loss: torch.Tensor  # scalar: mean squared error over masked patches
    pred: torch.Tensor  # [B, N, p*p*C] predicted patches (normalised targets if norm_pix_loss)
    mask: torch.Tensor  # [B, N] 1 = masked
    ids_restore: torch.Tensor  # [B, N]
    latent: torch.Tensor  # [B, 1+K, D] what the decoder was fed (after the final norm)
    features: list[torch.Tensor] | None = None  # every block output [B, 1+K, D], before the norm


@dataclass
class EncoderOutput:
    features: list[torch.Tensor]  # every block's output [B, 1+K, D] (cls first), before the norm
    masking: Masking


class EncoderOnlyError(RuntimeError):
    """Raised when a model loaded without decoder weights is asked to reconstruct."""



NORMALISED_MAX = 2.7  # the largest ImageNet-normalised value: (1 - 0.406) / 0.225 = 2.64


def check_normalised(imgs: torch.Tensor) -> None:
    """Refuse non-negative images beyond any normalised pixel (0-255 floats), warn on a batch
    in [0, 1] with a spread of over half a unit (raw pixels, not normalised ones: a normalised
    batch stays in [0, 1] only when every pixel is near mid-grey). Inputs with negative values
    (normalised images, noise) pass."""
    lo, hi = (float(v) for v in torch.aminmax(imgs.detach().float()))
    if lo >= 0.0 and hi > NORMALISED_MAX:
        raise ValueError(f"image values reach [{lo:.3g}, {hi:.3g}], beyond any ImageNet-normalised "
                         f"pixel (|x| <= {NORMALISED_MAX}): normalise 0-255 pixels first with "
                         f"workbench.data.normalize(imgs)")
    if lo >= 0.0 and hi <= 1.0 and hi - lo > 0.5:
        warnings.warn(f"the images lie in [{lo:.3g}, {hi:.3g}]: they look like [0, 1] pixels, not "
                      f"ImageNet-normalised ones; use workbench.data.normalize(imgs * 255)",
                      stacklevel=4)

@model_class("mae")
class MaskedAutoencoder(nn.Module):
    """``has_decoder=False``: the weights come from an encoder-only file, so the decoder is
    untrained and reconstructing is an error. ``source``: the checkpoint it was loaded from."""

    has_fusion = False  # as MODEL_KINDS says: True for a decoder that reads several layers (MFF)

    def __init__(self, cfg: ModelConfig, has_decoder: bool = True,
                 source: CheckpointInfo | None = None):
        super().__init__()
        self.cfg = cfg
        self._has_decoder = bool(has_decoder)
        self.source = source
        d, dd, n = cfg.embed_dim, cfg.decoder_embed_dim, cfg.num_patches
        norm_layer = partial(nn.LayerNorm, eps=cfg.layer_norm_eps)

        # encoder
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d), requires_grad=False)  # fixed
        if cfg.mask_token_in_encoder:
            self.encoder_mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(
            [Block(d, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
             for _ in range(cfg.depth)])
        self.norm = norm_layer(d)

        # decoder
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(dd, cfg.decoder_num_heads, cfg.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
             for _ in range(cfg.decoder_depth)])
        self.decoder_norm = norm_layer(dd)
        self.decoder_pred = nn.Linear(dd, cfg.patch_size**2 * cfg.in_chans)

        self.initialize_weights()

    @property
    def has_decoder(self) -> bool:
        """False for a model loaded from an encoder-only checkpoint."""
        return self._has_decoder

    @property
    def checkpoint_info(self) -> CheckpointInfo | None:
        """What :func:`workbench.checkpoints.load_checkpoint` loaded (None if not loaded)."""
        return self.source

    # ----------------------------------------------------------------------------- init
    def initialize_weights(self) -> None:
        """The official recipe: fixed sin-cos positions, Xavier-uniform linears (and patch
        projection, seen as a linear), N(0, 0.02) tokens, unit LayerNorms."""
        g = self.cfg.grid_size
        self.pos_embed.data.copy_(sincos_2d(self.cfg.embed_dim, g))
        self.decoder_pos_embed.data.copy_(sincos_2d(self.cfg.decoder_embed_dim, g))
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        if self.cfg.mask_token_in_encoder:
            nn.init.normal_(self.encoder_mask_token, std=0.02)
        self.apply(self._init_module)

    @staticmethod
    def _init_module(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------------------- patches
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, N, p*p*C], each patch flattened as (row, col, channel)."""
        p, c = self.cfg.patch_size, self.cfg.in_chans
        b, _, h, w = imgs.shape
        x = imgs.reshape(b, c, h // p, p, w // p, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(b, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, p*p*C] -> [B, C, H, W]; the inverse of :meth:`patchify`."""
        p, c, g = self.cfg.patch_size, self.cfg.in_chans, self.cfg.grid_size
        b = x.shape[0]
        x = x.reshape(b, g, g, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(b, c, g * p, g * p)

    def check_images(self, imgs: torch.Tensor) -> None:
        """Images [B, C, S, S] of floats, ImageNet-normalised: integer pixels are refused; out of
        training (probes, explorers: a host sync is cheap there) values beyond any normalised
        pixel are refused and [0, 1] pixels draw a warning, since the loss barely changes on
        them and nothing else would look wrong."""
        c, s = self.cfg.in_chans, self.cfg.img_size
        if imgs.ndim != 4 or imgs.shape[1] != c or imgs.shape[2] != s or imgs.shape[3] != s:
            raise ValueError(f"expected images of shape [B, {c}, {s}, {s}], got {list(imgs.shape)}")
        if not imgs.is_floating_point():
            raise TypeError(f"images are {imgs.dtype}: the model takes floats normalised with "
                            f"ImageNet's mean and std: workbench.data.normalize(imgs) does it "
                            f"for uint8 pixels")
        if not self.training:
            check_normalised(imgs)

    # ----------------------------------------------------------------------------- masking
    def draw_masking(self, batch: int, mask_ratio: float, strategy: str = "random",
                     generator: torch.Generator | None = None,
                     device: torch.device | None = None) -> Masking:
        """Draw which patches each sample keeps, by any registered strategy (MAE's
        ``random_masking`` is ``strategy="random"``)."""
        return mask_patches(batch, self.cfg.grid_size, mask_ratio, strategy, generator, device)

    # ----------------------------------------------------------------------------- encoder
    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, strategy: str = "random",
                        generator: torch.Generator | None = None,
                        masking: Masking | None = None) -> EncoderOutput:
        """Embed patches, drop the masked ones (``masking`` if given), prepend cls, run blocks."""
        x = self.patch_embed(imgs)  # [B, N, D]
        x = x + self.pos_embed[:, 1:, :]
        m = masking if masking is not None else self.draw_masking(
            x.shape[0], mask_ratio, strategy, generator, x.device)
        if self.cfg.mask_token_in_encoder:  # ablation: masked positions become a mask token
            token = self.encoder_mask_token.to(x.dtype) + self.pos_embed[:, 1:, :]
            x = torch.where(m.mask.unsqueeze(-1).bool(), token.expand_as(x), x)
        else:
            x = torch.gather(x, 1, m.ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)  # [B, 1+K, D]
        features = []
        for blk in self.blocks:
            x = blk(x)
            features.append(x)
        return EncoderOutput(features=features, masking=m)

    def decoder_input(self, features: list[torch.Tensor]) -> torch.Tensor:
        """What the decoder reads: MAE feeds the normed last block (MFF overrides this)."""
        return self.norm(features[-1])

    # ----------------------------------------------------------------------------- decoder
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """[B, 1+K, D] -> [B, N, p*p*C]: append mask tokens, unshuffle, decode, predict pixels."""
        if not self.has_decoder:
            raise EncoderOnlyError(
                "this model was loaded from an encoder-only checkpoint (no decoder weights), so it "
                "cannot reconstruct images; encoder probes (features, frequency, linear probe) work")
        x = self.decoder_embed(latent)  # [B, 1+K, Dd]
        n = ids_restore.shape[1]
        if x.shape[1] - 1 < n:  # visible tokens only: fill the masked positions
            fill = self.mask_token.to(x.dtype).expand(x.shape[0], n + 1 - x.shape[1], -1)
            body = torch.cat([x[:, 1:, :], fill], dim=1)  # [B, N, Dd] kept first
            body = torch.gather(body, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
            x = torch.cat([x[:, :1, :], body], dim=1)
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return self.decoder_pred(x)[:, 1:, :]  # drop cls

    # ----------------------------------------------------------------------------- loss
    def patch_targets(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, N, p*p*C] regression targets: pixels, each patch normalised if norm_pix_loss."""
        target = self.patchify(imgs.float())
        if self.cfg.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches only (fp32)."""
        per_patch = ((pred.float() - self.patch_targets(imgs)) ** 2).mean(dim=-1)  # [B, N]
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)

    # ----------------------------------------------------------------------------- API
    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None,
                mask_strategy: str | None = None, generator: torch.Generator | None = None,
                seed: int | None = None, return_features: bool = False,
                masking: Masking | None = None) -> MAEOutput:
        """One MAE step on ``imgs`` [B, C, H, W] (ImageNet-normalised). ``mask_ratio`` and
        ``mask_strategy`` default to the config's; ``seed`` (or a ``generator``) fixes the mask;
        ``masking`` gives the masks outright (e.g. drawn per sample by the training loop)."""
        self.check_images(imgs)
        ratio = self.cfg.mask_ratio if mask_ratio is None else check_mask_ratio(mask_ratio)
        strategy = check_mask_strategy(mask_strategy or self.cfg.mask_strategy)
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        enc = self.forward_encoder(imgs, ratio, strategy, generator, masking)
        latent = self.decoder_input(enc.features)
        pred = self.forward_decoder(latent, enc.masking.ids_restore)
        loss = self.forward_loss(imgs, pred, enc.masking.mask)
        return MAEOutput(loss=loss, pred=pred, mask=enc.masking.mask,
                         ids_restore=enc.masking.ids_restore, latent=latent,
                         features=enc.features if return_features else None)

    def encode(self, imgs: torch.Tensor, mask_ratio: float = 0.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The plain ViT representation used downstream: last block + final norm,
        [B, 1+K, D] (K = N at ratio 0, tokens in raster order). MFF's fusion is not applied:
        it only feeds the decoder."""
        self.check_images(imgs)
        return self.norm(self.forward_encoder(imgs, mask_ratio, "random", generator).features[-1])

    def layer_features(self, imgs: torch.Tensor, mask_ratio: float = 0.0,
                       generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Every block's output [B, 1+K, D] (cls first, before the final norm)."""
        self.check_images(imgs)
        return self.forward_encoder(imgs, mask_ratio, "random", generator).features

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed", "decoder_pos_embed", "mask_token", "encoder_mask_token"}
