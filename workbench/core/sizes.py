"""How big a model or a run will be, from its settings alone, checked before anything is allocated.

A setting that cannot fit -- ``--set depth=1000000``, a Hugging Face ``config.json`` that says
ten million layers -- used to end in ``std::bad_alloc`` or ``DefaultCPUAllocator: can't allocate
memory`` after the machine's memory was gone. Here the size is a closed form over the settings,
so it is known, and refused with the numbers, before a single block is built:

* :func:`model_size` -- parameters of the ViT encoder, the decoder and MFF's projections
  (every tensor of the state dict, the fixed sin-cos tables included), exact: the tests compare
  it with ``sum(p.numel())`` of real models of both kinds;
* :func:`training_size` -- for a training step also the gradients and AdamW's two moments
  (exact: one number each per trainable parameter) and the activations autograd keeps for the
  backward pass (estimated by :func:`activation_elements`, counted tensor by tensor and checked
  against what autograd actually saves on small models);
* :func:`machine_memory` / :func:`device_memory` -- what this process can have: physical memory,
  lowered by a container (cgroup) or address-space (``ulimit -v``) limit, or a GPU's free memory;
* :func:`check_model_fits`, :func:`check_training_fits`, :func:`check_hessian_fits` -- raise
  :class:`TooLarge` naming the setting and the numbers; :func:`announce_cost` prints what a long
  probe will take before it runs.

The estimates are meant not to exceed the need: the parameter, gradient and moment counts are
exact, and the activation count leaves out small tensors (LayerNorm statistics, gather indices;
measured 1-2 % below what autograd keeps), so a run refused for memory would not have fit either.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelConfig

FP32 = 4  # bytes per number of the weights, gradients and AdamW moments
BYTES_PER_ACTIVATION = {"fp32": 4, "bf16": 2, "fp16": 2}  # autocast keeps some tensors in fp32
COST_NOTICE_S = 60.0  # probes expected to take longer say so before they start
# the retained graph of a first gradient taken with create_graph=True (what every Hessian-vector
# product runs backward through) holds the forward's saved tensors and about as much again for
# the differentiable backward: measured 2.08x the forward's on the tiny MAE and MFF-MAE
HVP_GRAPH_FACTOR = 2.0
# the papers' largest model, named in refusals as a scale known to be reasonable
VIT_H = ("the papers' largest model, MAE ViT-H, is depth=32 x embed_dim=1280 with a "
         "decoder_depth=8 x decoder_embed_dim=512 decoder (657M parameters)")


class TooLarge(ValueError):
    """A model, training run or probe that cannot fit in this machine's (or GPU's) memory; the
    message names the setting, the size and the memory there is."""


# ------------------------------------------------------------------------------- formatting
def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB', 7.1e12 -> '6.46 TiB' (binary units, 3 significant digits)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.3g} {units[i]}"


def human_count(n: int) -> str:
    """42_512 -> '42.5K', 3_400_000 -> '3.4M', 4.4e11 -> '4.4e11'."""
    if n < 1e4:
        return str(n)
    if n < 1e6:
        return f"{n / 1e3:.3g}K"
    if n < 1e9:
        return f"{n / 1e6:.3g}M"
    return f"{n:.2g}".replace("e+", "e")


# ------------------------------------------------------------------------------- parameters
def block_parameters(dim: int, mlp_ratio: float) -> int:
    """One timm ViT block (qkv bias, no layer scale): two LayerNorms (4·D), qkv (3·D² + 3·D),
    the attention projection (D² + D), the MLP (2·D·H + H + D) with H = int(D·mlp_ratio)."""
    hidden = int(dim * mlp_ratio)
    return 4 * dim * dim + 2 * dim * hidden + 9 * dim + hidden


def fusion_parameters(cfg: ModelConfig) -> int:
    """MFF's fusion: one projection per fused layer but the last, plus one logit per layer."""
    layers, d = len(cfg.fuse_layers), cfg.embed_dim
    per_projection = {"linear": d * d + d, "mlp": 2 * (d * d + d), "identity": 0}
    return (layers - 1) * per_projection[cfg.fusion_proj] + layers


@dataclass
class ModelSize:
    """A model's parameter count by part (every tensor of its state dict), from its settings."""

    parts: dict[str, int]  # what a message names -> parameters, e.g. "depth=12 x embed_dim=768"
    trainable: int  # what AdamW updates: all but the fixed sin-cos position tables
    encoder: int  # patch embedding, cls token, position table, blocks, final norm
    decoder: int  # decoder embedding, mask token, its positions, blocks, norm, prediction
    fusion: int = 0  # MFF's projections and logits

    @property
    def parameters(self) -> int:
        return self.encoder + self.decoder + self.fusion

    @property
    def weight_bytes(self) -> int:
        """fp32 weights."""
        return FP32 * self.parameters

    @property
    def largest(self) -> str:
        """The settings of the part that holds the most parameters."""
        return max(self.parts, key=self.parts.get)

    def summary(self) -> dict[str, Any]:
        return {"parameters": self.parameters, "encoder_parameters": self.encoder,
                "decoder_parameters": self.decoder, "fusion_parameters": self.fusion,
                "trainable_parameters": self.trainable, "weight_bytes_fp32": self.weight_bytes}


def _blocks_text(depth_name: str, depth: int, dim_name: str, dim: int, mlp_ratio: float) -> str:
    text = f"{depth_name}={depth} x {dim_name}={dim}"
    return text if mlp_ratio == 4.0 else f"{text} x mlp_ratio={mlp_ratio}"


def model_size(cfg: ModelConfig) -> ModelSize:
    """Parameters of the model ``cfg`` describes, in closed form (no tensor is made). A model
    loaded without decoder weights still has its decoder's tensors, so they count too."""
    d, dd, n, c, p = cfg.embed_dim, cfg.decoder_embed_dim, cfg.num_patches, cfg.in_chans, \
        cfg.patch_size
    pixels = p * p * c  # one patch's values
    enc_blocks = cfg.depth * block_parameters(d, cfg.mlp_ratio)
    dec_blocks = cfg.decoder_depth * block_parameters(dd, cfg.mlp_ratio)
    positions = (n + 1) * (d + dd)  # the fixed sin-cos tables of encoder and decoder
    patches = (d * pixels + d) + (dd * pixels + pixels)  # patch embedding, pixel prediction
    tokens = d * (2 if cfg.mask_token_in_encoder else 1) + dd  # cls, mask token(s)
    norms = 2 * d + 2 * dd
    bridge = d * dd + dd  # decoder_embed
    fusion = fusion_parameters(cfg) if cfg.has_fusion else 0
    encoder = d * pixels + d + (n + 1) * d + d * (2 if cfg.mask_token_in_encoder else 1) \
        + enc_blocks + 2 * d
    decoder = bridge + dd + (n + 1) * dd + dec_blocks + 2 * dd + dd * pixels + pixels
    parts = {_blocks_text("depth", cfg.depth, "embed_dim", d, cfg.mlp_ratio): enc_blocks,
             _blocks_text("decoder_depth", cfg.decoder_depth, "decoder_embed_dim", dd,
                          cfg.mlp_ratio): dec_blocks,
             f"img_size={cfg.img_size} / patch_size={p} ({n} patches) x the widths {d} + {dd}":
                 positions,
             f"patch_size={p} x in_chans={c} x the widths {d} + {dd}": patches,
             f"embed_dim={d} x decoder_embed_dim={dd}": bridge + tokens + norms,
             f"fusion_proj={cfg.fusion_proj!r} on {len(cfg.fuse_layers or [])} fused layers": fusion}
    return ModelSize(parts, encoder + decoder + fusion - positions, encoder, decoder, fusion)


# ------------------------------------------------------------------------------- activations
def encoder_tokens(cfg: ModelConfig) -> int:
    """Tokens the encoder runs on in training: cls + the visible patches (all N with
    ``mask_token_in_encoder``), as ``int(N·(1 - mask_ratio))`` keeps them."""
    if cfg.mask_token_in_encoder:
        return cfg.num_patches + 1
    return int(cfg.num_patches * (1 - cfg.mask_ratio)) + 1


def block_activations(tokens: int, dim: int, mlp_ratio: float, heads: int,
                      math_attention: bool = False) -> int:
    """Numbers one ViT block keeps for its backward pass, per image: its input, the two
    LayerNorm outputs, q/k/v, the attention output, the residual (8·T·D), the MLP's hidden
    pre- and post-GELU (2·T·H), and per head either the log-sum-exp of a fused kernel (T) or,
    under the math kernel the Hessian probes use, the attention matrix (T²). Read off what
    autograd saves in timm 1.0's Block (LayerNorm statistics, 4·T, left out)."""
    hidden = int(dim * mlp_ratio)
    attention = heads * tokens * (tokens if math_attention else 1)
    return 8 * tokens * dim + 2 * tokens * hidden + attention


def activation_elements(cfg: ModelConfig, math_attention: bool = False) -> int:
    """Numbers autograd keeps per image for one MAE / MFF-MAE training forward: the blocks (see
    :func:`block_activations`; encoder on the visible tokens, decoder on all N + 1), the input
    image, the inputs of the two gathers that drop and restore the masked patches (N·D, N·Dd;
    none with ``mask_token_in_encoder``), of the final norm and the decoder embedding, of the
    decoder norm and the pixel prediction, the loss's error per patch value, and MFF's stacked
    layers (plus the hidden layer of ``"mlp"`` projections). Checked against autograd's saved
    tensors in the tests (within a few per cent, below them)."""
    d, dd, n = cfg.embed_dim, cfg.decoder_embed_dim, cfg.num_patches
    te, td = encoder_tokens(cfg), n + 1
    pixels = cfg.patch_size ** 2 * cfg.in_chans
    total = cfg.depth * block_activations(te, d, cfg.mlp_ratio, cfg.num_heads, math_attention)
    total += cfg.decoder_depth * block_activations(td, dd, cfg.mlp_ratio, cfg.decoder_num_heads,
                                                   math_attention)
    gathers = 0 if cfg.mask_token_in_encoder else n * (d + dd)
    total += cfg.in_chans * cfg.img_size ** 2 + gathers + 2 * te * d + 2 * td * dd \
        + n * pixels + n
    if cfg.has_fusion:
        layers = len(cfg.fuse_layers)
        total += layers * te * d + (2 * (layers - 1) * te * d if cfg.fusion_proj == "mlp" else 0)
    return total


@dataclass
class TrainingSize:
    """Memory of one rank's training step, from the settings: exact weights, gradients and AdamW
    moments, estimated activations of one micro-batch."""

    model: ModelSize
    micro_batch: int  # images one rank runs forward and backward at once
    activation_bytes: int
    ranks_here: int = 1  # ranks sharing this memory (CPU ranks of one machine)
    precision: str = "fp32"
    activation_culprit: str = ""  # the settings that make the activations what they are

    @property
    def gradient_bytes(self) -> int:
        return FP32 * self.model.trainable

    @property
    def optimizer_bytes(self) -> int:
        """AdamW's two moments (exp_avg, exp_avg_sq), fp32."""
        return 2 * FP32 * self.model.trainable

    @property
    def state_bytes(self) -> int:
        """Weights, gradients and moments: what any step needs, whatever the batch."""
        return self.model.weight_bytes + self.gradient_bytes + self.optimizer_bytes

    @property
    def rank_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes

    @property
    def total_bytes(self) -> int:
        return self.ranks_here * self.rank_bytes

    @property
    def culprit(self) -> str:
        """The settings of the largest share of the memory."""
        if self.activation_bytes > self.state_bytes:
            return self.activation_culprit
        return self.model.largest

    def lines(self) -> list[str]:
        """The estimate as the ``--dry-run`` and ``info`` print it."""
        m = self.model
        ranks = f" x {self.ranks_here} ranks on this machine" if self.ranks_here > 1 else ""
        return [f"parameters         {human_count(m.parameters)} (encoder "
                f"{human_count(m.encoder)}, decoder {human_count(m.decoder)}"
                + (f", fusion {human_count(m.fusion)}" if m.fusion else "") + f"; "
                f"{human_count(m.trainable)} trainable)",
                f"fp32 weights       {human_bytes(m.weight_bytes)}",
                f"gradients + AdamW  {human_bytes(self.gradient_bytes + self.optimizer_bytes)} "
                f"(one gradient and two moments per trainable parameter, fp32)",
                f"activations        ~{human_bytes(self.activation_bytes)} at {self.micro_batch} "
                f"image{'s' if self.micro_batch != 1 else ''} per micro-batch ({self.precision}; "
                f"estimated from the tensors autograd keeps per block)",
                f"training needs     ~{human_bytes(self.rank_bytes)} per rank{ranks}"]


def training_size(cfg: ModelConfig, micro_batch: int, precision: str = "fp32",
                  ranks_here: int = 1) -> TrainingSize:
    """What one training step of ``cfg`` at ``micro_batch`` images per rank holds."""
    per_image = activation_elements(cfg) * BYTES_PER_ACTIVATION.get(precision, FP32)
    culprit = (f"{micro_batch} images per micro-batch x {encoder_tokens(cfg)} encoder / "
               f"{cfg.num_patches + 1} decoder tokens (img_size={cfg.img_size}, "
               f"patch_size={cfg.patch_size}) at width {cfg.embed_dim} / "
               f"{cfg.decoder_embed_dim}, depth {cfg.depth} / {cfg.decoder_depth}")
    return TrainingSize(model_size(cfg), micro_batch, micro_batch * per_image, ranks_here,
                        precision, culprit)


# ------------------------------------------------------------------------------- memory
@dataclass
class MemoryBudget:
    """How much memory there is where something would be allocated, and how a message says it."""

    bytes: int
    where: str  # "this machine has 23.4 GiB of memory", "cuda:0 has 70 GiB free of 80 GiB"


def physical_memory() -> int | None:
    """This machine's RAM: ``sysconf`` (Linux, macOS), else psutil if it is installed."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().total)


def cgroup_limit() -> int | None:
    """A container's memory limit (cgroup v2 ``memory.max``, v1 ``limit_in_bytes``), if any."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # v1 says "unlimited" with a huge number
            return int(text)
    return None


def address_space_left() -> int | None:
    """Address space this process may still map under ``ulimit -v`` (RLIMIT_AS), if limited:
    the limit less what is mapped now (the libraries, torch included)."""
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        mapped = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        mapped = 0
    return max(0, soft - mapped)


def machine_memory() -> MemoryBudget:
    """The main memory this process can have: the smallest of physical memory, a container's
    limit and the address space left under ``ulimit -v``."""
    found = [(n, text) for n, text in (
        (physical_memory(), "this machine has {} of memory"),
        (cgroup_limit(), "this container is limited to {} (cgroup memory limit)"),
        (address_space_left(), "this process may map {} more (ulimit -v)")) if n]
    if not found:  # nothing could be read: do not refuse on a guess
        return MemoryBudget(1 << 62, "the memory could not be read")
    n, text = min(found)
    return MemoryBudget(n, text.format(human_bytes(n)))


def device_memory(device: Any = "cpu") -> MemoryBudget:
    """What ``device`` has: a CUDA device's free memory (``torch.cuda.mem_get_info``), else
    :func:`machine_memory`."""
    name = str(device)
    if not name.startswith("cuda"):
        return machine_memory()
    import torch

    if not torch.cuda.is_available():
        return machine_memory()
    dev = torch.device(name)
    free, total = torch.cuda.mem_get_info(dev)
    label = f"cuda:{dev.index if dev.index is not None else torch.cuda.current_device()}"
    return MemoryBudget(free, f"{label} has {human_bytes(free)} free of {human_bytes(total)}")


# ------------------------------------------------------------------------------- checks
def _refuse_if(need: int, budget: MemoryBudget, message: str, advice: str) -> None:
    """Raise :class:`TooLarge` as "<message>; <where the memory is>. <advice>" when ``need``
    bytes exceed the budget."""
    if need > budget.bytes:
        raise TooLarge(f"{message}; {budget.where}. {advice[:1].upper()}{advice[1:]}")


def check_model_fits(cfg: ModelConfig, device: Any = "cpu", what: str = "the model") -> ModelSize:
    """Refuse a model whose fp32 weights cannot fit in main memory (where every model is built)
    or on ``device``; else return its size."""
    size = model_size(cfg)
    for budget in _budgets(device):
        _refuse_if(size.weight_bytes, budget,
                   f"{size.largest}: {what} would have {human_count(size.parameters)} "
                   f"parameters, {human_bytes(size.weight_bytes)} of fp32 weights",
                   f"Nothing was built; {VIT_H}")
    return size


def _budgets(device: Any) -> list[MemoryBudget]:
    """Main memory, and the device's when it is not the CPU (weights are built on the CPU)."""
    budgets = [machine_memory()]
    if str(device).startswith("cuda"):
        budgets.append(device_memory(device))
    return budgets


def check_training_fits(mcfg: ModelConfig, batch_size: int, world: int = 1, accum_steps: int = 1,
                        device: Any = "cpu", precision: str = "fp32") -> TrainingSize:
    """Refuse a training run whose step cannot fit: the weights in main memory (the model is
    built there), and weights + gradients + AdamW moments + the activations of one micro-batch
    (``batch_size / (world · accum_steps)`` images) where the step runs; CPU ranks of one
    machine (``LOCAL_WORLD_SIZE``) share its memory. Returns the estimate."""
    cpu = not str(device).startswith("cuda")
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if cpu and world > 1 else 1
    micro = max(1, batch_size // max(1, world * accum_steps))
    size = training_size(mcfg, micro, precision, ranks_here)
    check_model_fits(mcfg, "cpu", "the model")
    budget = device_memory(device)
    ranks = f" x {ranks_here} ranks on this machine" if ranks_here > 1 else ""
    advice = ("lower batch_size or raise accum_steps (the activations scale with the "
              "micro-batch)" if size.activation_bytes > size.state_bytes else VIT_H)
    _refuse_if(size.total_bytes, budget,
               f"{size.culprit}: training needs ~{human_bytes(size.rank_bytes)} per rank{ranks} "
               f"({human_count(size.model.parameters)} parameters: "
               f"{human_bytes(size.model.weight_bytes)} of fp32 weights + "
               f"{human_bytes(size.gradient_bytes + size.optimizer_bytes)} of gradients and "
               f"AdamW moments, + ~{human_bytes(size.activation_bytes)} of activations at "
               f"{micro} images per micro-batch)",
               f"Nothing was built or written; {advice}")
    return size


def hvp_graph_bytes(cfg: ModelConfig, images: int, bytes_per_number: int = FP32) -> int:
    """The graph a Hessian-vector product runs through, for a loss over ``images`` images: the
    forward's saved tensors under math attention, times :data:`HVP_GRAPH_FACTOR` for the first
    gradient's differentiable backward (retained for every product)."""
    return int(HVP_GRAPH_FACTOR * activation_elements(cfg, math_attention=True) * images
               * bytes_per_number)


def check_hessian_fits(model: Any, images: int, what: str) -> int:
    """Refuse a Hessian probe of ``model`` on ``images`` images (in one graph) whose retained
    graph (:func:`hvp_graph_bytes`) cannot fit where the model is; returns the estimated bytes
    (0 for a model without a :class:`ModelConfig` ``cfg``: nothing to estimate from)."""
    params = [p for p in model.parameters() if p.requires_grad]
    cfg = getattr(model, "cfg", None)
    if not params or not isinstance(cfg, ModelConfig):
        return 0
    need = hvp_graph_bytes(cfg, images, params[0].element_size())
    _refuse_if(need, device_memory(params[0].device),
               f"{what}: ~{human_bytes(need)} of retained graph for {images} images (the "
               f"forward's saved tensors under math attention, x{HVP_GRAPH_FACTOR:g} for the "
               f"differentiable first gradient)",
               "Use fewer or smaller batches (each batch of hessian_spectrum is its own graph)")
    return need


def check_vectors_fit(count: int, numel: int, bytes_per_number: int, device: Any, what: str,
                      advice: str) -> None:
    """Refuse ``count`` vectors of ``numel`` numbers (a Krylov basis, weight copies) that cannot
    fit on ``device``."""
    need = count * numel * bytes_per_number
    _refuse_if(need, device_memory(device),
               f"{what}: {count} vectors of {human_count(numel)} parameters need "
               f"{human_bytes(need)}", advice)


def announce_cost(what: str, seconds_each: float, count: int, unit: str,
                  memory: int | None = None, threshold: float | None = None) -> float:
    """Print what ``count`` more ``unit`` of ``seconds_each`` will take, when that is more than
    ``threshold`` seconds (default :data:`COST_NOTICE_S`: short runs stay quiet); returns the
    expected seconds."""
    expected = seconds_each * count
    if expected > (COST_NOTICE_S if threshold is None else threshold):
        mem = f"; ~{human_bytes(memory)} of memory" if memory else ""
        print(f"[{what}] expected ~{_duration(expected)}: {count} {unit} x {seconds_each:.3g} s "
              f"(the first one, timed){mem}", flush=True)
    return expected


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


__all__ = ["TooLarge", "ModelSize", "TrainingSize", "MemoryBudget", "model_size",
           "training_size", "activation_elements", "block_parameters", "machine_memory",
           "device_memory", "check_model_fits", "check_training_fits", "check_hessian_fits",
           "check_vectors_fit", "hvp_graph_bytes", "announce_cost", "human_bytes", "human_count"]
