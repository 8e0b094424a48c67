"""`botlab plan`: the memory each part of a run needs on one device, worked out before anything is loaded.

The numbers come from the model's config.json (or, for a model not on this machine, the published configs in
KNOWN_ARCHITECTURES) and the team file. Each estimate states its formula where it is computed. `botlab run` uses the
same plan to refuse, before loading a model, a run that cannot fit.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from botlab.config import TeamConfig, parse_gpus

GiB = 2**30
RUNTIME_RESERVE = GiB  # per device: CUDA context, cuBLAS workspaces, allocator fragmentation (on CPU: torch itself)
CUDA_GRAPHS = GiB // 2  # vLLM's captured decode graphs when model.enforce_eager is off
VLLM_TOKEN_BUDGET = 8192  # vLLM sizes its activations by profiling one forward of max_num_batched_tokens tokens
VLLM_MAX_SEQS = 256  # ... and its sampler's fp32 logits for max_num_seqs sequences
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto: the checkpoints botlab targets are bf16
BOTH, GENERATING, TRAINING = ("generating", "training"), ("generating",), ("training",)

_QWEN = dict(model_type="qwen2")  # Qwen2 layers have q/k/v biases
# Published config.json numbers of the models botlab ships team files for: plan before downloading them.
KNOWN_ARCHITECTURES = {
    "qwen2.5-coder-0.5b": dict(_QWEN, hidden_size=896, num_hidden_layers=24, vocab_size=151936,
                               intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
                               tie_word_embeddings=True),
    "qwen2.5-coder-1.5b": dict(_QWEN, hidden_size=1536, num_hidden_layers=28, vocab_size=151936,
                               intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                               tie_word_embeddings=True),
    "qwen2.5-coder-3b": dict(_QWEN, hidden_size=2048, num_hidden_layers=36, vocab_size=151936,
                             intermediate_size=11008, num_attention_heads=16, num_key_value_heads=2,
                             tie_word_embeddings=True),
    "qwen2.5-coder-7b": dict(_QWEN, hidden_size=3584, num_hidden_layers=28, vocab_size=152064,
                             intermediate_size=18944, num_attention_heads=28, num_key_value_heads=4,
                             tie_word_embeddings=False),
    "qwen2.5-coder-14b": dict(_QWEN, hidden_size=5120, num_hidden_layers=48, vocab_size=152064,
                              intermediate_size=13824, num_attention_heads=40, num_key_value_heads=8,
                              tie_word_embeddings=False),
}


class PlanError(Exception):
    """No plan can be made (unknown model, bad --gpus); the message names the input."""


# --- the model -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """A decoder-only transformer with SwiGLU MLPs and grouped-query attention (Llama, Qwen2, SmolLM2, ...)."""

    hidden: int
    layers: int
    vocab: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool
    source: str  # where the numbers come from, said in the output

    @classmethod
    def from_config(cls, config: dict, source: str, model_name: str) -> "Architecture":
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            return cls(
                hidden=hidden, layers=int(config["num_hidden_layers"]), vocab=int(config["vocab_size"]),
                intermediate=int(config["intermediate_size"]), heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                tied=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")), source=source,
            )
        except KeyError as err:
            raise PlanError(f"model.name {model_name!r}: {source} has no {err.args[0]}; botlab plans decoder-only "
                            "models with the Llama/Qwen2 config keys") from None
        except (TypeError, ValueError) as err:
            raise PlanError(f"model.name {model_name!r}: {source} has a value that is not a number ({err})") from None

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer in one decoder layer, by its Hugging Face name."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def layer_params(self) -> int:
        linear = sum(a * b for a, b in self.projections().values())
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        return linear + bias + 2 * self.hidden  # two RMSNorm weights

    @property
    def embedding_params(self) -> int:
        """Input embedding and, unless tied to it, the output head."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.layers * self.layer_params + self.embedding_params + self.hidden  # + the final norm

    def lora_params(self, rank: int, targets: list[str]) -> int:
        """A LoRA adapter on a linear layer (in -> out) adds rank * (in + out) parameters."""
        return self.layers * sum(rank * (a + b) for name, (a, b) in self.projections().items() if name in targets)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes  # a key and a value per layer


def find_architecture(name: str) -> Architecture:
    """From the model's config.json on this machine, else from the table of published configs."""
    from botlab.models import ModelNotFound, resolve_model

    try:
        folder = resolve_model(name)
    except ModelNotFound as err:
        known = KNOWN_ARCHITECTURES.get(Path(name).name.lower().removesuffix("-instruct"))
        if known is None:
            raise PlanError(
                f"model.name {name!r}: {err}; nor is it one of the architectures botlab knows without a config.json "
                f"({', '.join(KNOWN_ARCHITECTURES)}), so there is nothing to count its parameters from"
            ) from None
        return Architecture.from_config(known, "the published config in botlab's table (the model is not on this "
                                        "machine)", name)
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PlanError(f"model.name {name!r}: cannot read {config_file}: {err}") from None
    return Architecture.from_config(config, str(config_file), name)


# --- the hardware ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hardware:
    count: int
    memory: int  # bytes of one device
    gpu: bool
    source: str

    def describe(self) -> str:
        if self.gpu:
            return f"{self.count} GPU{'s' if self.count > 1 else ''} of {self.memory / GiB:g} GiB ({self.source})"
        return f"CPU, {self.memory / GiB:.1f} GiB of RAM ({self.source})"


def find_hardware(team: TeamConfig, gpus: str | None = None) -> Hardware:
    """--gpus, else model.gpus, else the GPUs torch sees, else this machine's RAM."""
    stated, source = (gpus, "--gpus") if gpus is not None else (team.model.gpus, "model.gpus")
    if stated is not None:
        try:
            count, gib = parse_gpus(stated)
        except ValueError as err:
            raise PlanError(f"{source}: {err}") from None
        return Hardware(count, int(gib * GiB), True, source)
    sizes = _visible_gpu_memory()
    if sizes:
        return Hardware(len(sizes), min(sizes), True, "the GPUs torch sees")
    import psutil

    return Hardware(1, psutil.virtual_memory().total, False, "no GPUs stated in model.gpus or seen by torch: this "
                    "machine's RAM")


def _visible_gpu_memory() -> list[int]:
    """Bytes of each GPU torch sees. Asked in a child process: reading them here would leave a CUDA context on GPU 0
    for the rest of the run (in every rank of a launched run)."""
    import torch

    if not torch.cuda.is_available():  # no context: the driver is asked for a count only
        return []
    code = ("import torch; print([torch.cuda.get_device_properties(i).total_memory "
            "for i in range(torch.cuda.device_count())])")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as err:
        raise PlanError(f"torch sees GPUs but their memory could not be read ({err}); state it with model.gpus "
                        "or --gpus") from None


# --- the plan --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    name: str
    bytes: int
    phases: tuple[str, ...]  # when it is held; () for a line that details the part above it
    note: str = ""


@dataclass
class Plan:
    model: str
    arch: Architecture
    hardware: Hardware
    trainable: int
    parts: list[Part]
    problems: list[str]  # what fails whatever the totals (a KV cache too small to start vLLM)
    notes: list[str]
    fixes: list[str] = field(default_factory=list)

    def peak(self, phase: str) -> int:
        return sum(p.bytes for p in self.parts if phase in p.phases)

    @property
    def fits(self) -> bool:
        return not self.problems and max(self.peak(phase) for phase in BOTH) <= self.hardware.memory

    def as_dict(self) -> dict:
        return {
            "model": self.model, "fits": self.fits,
            "architecture": asdict(self.arch),
            "parameters": self.arch.params, "trainable_parameters": self.trainable,
            "hardware": {"devices": self.hardware.count, "device_bytes": self.hardware.memory,
                         "gpu": self.hardware.gpu, "source": self.hardware.source},
            "parts": [asdict(p) | {"phases": list(p.phases)} for p in self.parts],
            "peak_bytes": {phase: self.peak(phase) for phase in BOTH},
            "problems": self.problems, "fixes": self.fixes, "notes": self.notes,
        }


def make_plan(team: TeamConfig, gpus: str | None = None) -> Plan:
    """The plan for the team on the stated hardware, with the settings that would make it fit when it does not."""
    arch = find_architecture(team.model.name)
    hardware = find_hardware(team, gpus)
    plan = estimate(team, arch, hardware)
    if not plan.fits:
        plan.fixes = find_fixes(team, arch, hardware)
    return plan


def estimate(team: TeamConfig, arch: Architecture, hw: Hardware) -> Plan:
    """Bytes held on the busiest device, by part, while generating and while training."""
    model = team.model
    parts = [Part("runtime reserve", RUNTIME_RESERVE, BOTH,
                  "CUDA context, workspaces, fragmentation" if hw.gpu else "Python, torch and the libraries")]
    problems: list[str] = []
    notes = [f"{model.name}: {arch.params / 1e9:.2f} B parameters ({arch.layers} layers, hidden {arch.hidden}, "
             f"vocab {arch.vocab}) from {arch.source}"]
    parts += _rollout_engine(team, arch, hw, problems, notes)
    learner, trainable = _learner(team, arch, hw, notes)
    parts += learner
    return Plan(model.name, arch, hw, trainable, parts, problems, notes)


def _rollout_engine(team: TeamConfig, arch: Architecture, hw: Hardware, problems: list[str],
                    notes: list[str]) -> list[Part]:
    model = team.model
    engine = model.engine
    if engine == "auto":
        engine = "vllm" if hw.gpu or importlib.util.find_spec("vllm") else "transformers"
        notes.append(f"model.engine auto: planned as {engine}" + (" (GPU hosts install it)" if hw.gpu else ""))
    length = model.max_model_len
    if engine == "server":
        notes.append("model.engine server: rollouts run on the vLLM servers in model.server_urls, not on these devices")
        return []
    if engine == "transformers":
        # It generates with the learner's own fp32 module: only its KV cache is extra, for one generate call.
        kv = model.transformers_batch_size * length * arch.kv_bytes_per_token(4)
        return [Part(f"rollouts (transformers): KV cache, {model.transformers_batch_size} × {length} tokens fp32",
                     kv, GENERATING, "weights shared with the learner")]
    tp = model.tensor_parallel_size
    if hw.gpu and tp > hw.count:
        problems.append(f"model.tensor_parallel_size {tp} needs {tp} GPUs; there {'is' if hw.count == 1 else 'are'} "
                        f"{hw.count}")
    dtype_bytes = DTYPE_BYTES[model.dtype]
    weights = arch.params * dtype_bytes // tp
    per_token = arch.kv_bytes_per_token(dtype_bytes) // tp
    if not hw.gpu:
        kv = int(model.cpu_kv_cache_gib * GiB)
        _check_kv(kv, per_token, length, "raise model.cpu_kv_cache_gib or lower model.max_model_len", problems)
        return [Part(f"rollouts (vLLM): policy weights {model.dtype}", weights, BOTH),
                Part("rollouts (vLLM): KV cache (model.cpu_kv_cache_gib)", kv, BOTH, _kv_note(kv, per_token, length))]
    share = int(model.gpu_memory_utilization * hw.memory)
    # vLLM profiles one forward of its token budget: the peak is the MLP's gate and up outputs (2·i) plus a few
    # hidden-size buffers (4·h) per token in the weights' dtype; its sampler holds fp32 logits for max_num_seqs rows.
    activations = (VLLM_TOKEN_BUDGET * (2 * arch.intermediate + 4 * arch.hidden) * dtype_bytes // tp
                   + VLLM_MAX_SEQS * arch.vocab * 4 + (0 if model.enforce_eager else CUDA_GRAPHS))
    kv = share - weights - activations
    _check_kv(kv, per_token, length, "raise model.gpu_memory_utilization or lower model.max_model_len", problems)
    asleep = model.sleep_mode
    split = f" / tensor_parallel_size {tp}" if tp > 1 else ""
    return [
        Part(f"rollouts (vLLM): its share, gpu_memory_utilization {model.gpu_memory_utilization:g}", share,
             GENERATING if asleep else BOTH,
             "freed while training (model.sleep_mode)" if asleep else "held while training too (sleep_mode off)"),
        Part(f"  policy weights {model.dtype}{split}", weights, ()),
        Part("  activations, sampler" + ("" if model.enforce_eager else ", CUDA graphs"), activations, ()),
        Part("  KV cache: the rest of the share", max(kv, 0), (), _kv_note(kv, per_token, length)),
    ]


def _check_kv(kv: int, per_token: int, length: int, change: str, problems: list[str]) -> None:
    if kv < per_token * length:
        problems.append(f"the KV cache ({max(kv, 0) / GiB:.2f} GiB) cannot hold one sequence of max_model_len "
                        f"{length} ({per_token * length / GiB:.2f} GiB), so vLLM refuses to start: {change}")


def _kv_note(kv: int, per_token: int, length: int) -> str:
    tokens = max(kv, 0) // per_token
    return f"{tokens:,} tokens, {tokens // length} sequences of max_model_len"


def _learner(team: TeamConfig, arch: Architecture, hw: Hardware, notes: list[str]) -> tuple[list[Part], int]:
    model, train = team.model, team.train
    sharding = train.sharding if hw.gpu and hw.count > 1 else "none"
    if train.sharding != "none" and sharding == "none":
        notes.append(f"train.sharding {train.sharding} does nothing on {'one GPU' if hw.gpu else 'CPU'}")
    shards = hw.count if sharding == "fsdp" else 1
    if shards > 1 and model.lora.enabled:
        notes.append("train.sharding fsdp with model.lora: botlab run refuses it (adapters are small): use ddp")
    over = f" / {shards} (fsdp)" if shards > 1 else ""
    parts = []
    if model.lora.enabled:
        trainable = arch.lora_params(model.lora.r, model.lora.target_modules)
        unknown = sorted(set(model.lora.target_modules) - set(arch.projections()))
        if unknown:
            notes.append(f"model.lora.target_modules {', '.join(unknown)}: not counted (the plan knows "
                         f"{', '.join(arch.projections())})")
        if model.lora.quantize == "4bit":
            # bitsandbytes quantizes the decoder's linear layers: half a byte a weight, plus an fp32 scale per
            # block of 64 (1/16 byte); embeddings, head and norms stay in model.dtype.
            linear = arch.layers * sum(a * b for a, b in arch.projections().values())
            base = linear * 9 // 16 + (arch.params - linear) * DTYPE_BYTES[model.dtype]
            parts.append(Part(f"learner: frozen base weights 4-bit NF4 (QLoRA){over}", base // shards, BOTH,
                              "model.lora.quantize: 4bit"))
        else:
            parts.append(Part(f"learner: frozen base weights {model.dtype}{over}",
                              arch.params * DTYPE_BYTES[model.dtype] // shards, BOTH, "LoRA: only adapters train"))
        parts.append(Part(f"learner: LoRA adapters fp32 (r {model.lora.r}){over}", 4 * trainable // shards, BOTH,
                          f"{trainable / 1e6:.1f} M parameters"))
    else:
        trainable = arch.params
        parts.append(Part(f"learner: master weights fp32{over}", 4 * trainable // shards, BOTH))
    parts.append(Part(f"learner: gradients fp32{over}", 4 * trainable // shards, TRAINING))
    if sharding == "ddp":
        parts.append(Part("learner: DDP gradient buckets fp32", 4 * trainable, BOTH, "a second copy, for all-reduce"))
    parts.append(Part(f"learner: AdamW moments fp32{over}", 8 * trainable // shards, BOTH))
    if shards > 1:
        # FSDP gathers one wrapped unit at a time (and prefetches the next); the root unit, embeddings and head,
        # stays gathered through forward and backward.
        gathered = (arch.embedding_params + 2 * arch.layer_params) * (DTYPE_BYTES[model.dtype] if model.lora.enabled
                                                                     else 4)
        parts.append(Part("learner: FSDP gathered weights (embeddings, head, 2 layers)", gathered, TRAINING))
    if train.kl_coef > 0 and not model.lora.enabled:
        parts.append(Part("learner: reference policy fp32 (train.kl_coef > 0)", 4 * arch.params, BOTH))
    micro, length = train.micro_batch, model.max_model_len
    tail = min(max(team.roles.proposer.max_new_tokens, team.roles.solver.max_new_tokens), length - 1)
    checkpointing = train.gradient_checkpointing
    lora_inputs = sum(a for name, (a, _) in arch.projections().items()
                      if model.lora.enabled and name in model.lora.target_modules)
    parts.append(Part(f"learner: activations, {micro} × {length} tokens, checkpointing "
                      f"{'on' if checkpointing else 'off'}",
                      activation_bytes(arch, micro * length, checkpointing, lora_inputs),
                      TRAINING, "train.micro_batch × model.max_model_len"))
    parts.append(Part(f"learner: logits of the completion tail, {micro} × {tail} × vocab",
                      logit_bytes(arch, micro * tail, train.entropy_coef > 0), TRAINING,
                      "the longest max_new_tokens of proposer and solver"))
    return parts, trainable


def activation_bytes(arch: Architecture, tokens: int, checkpointing: bool, lora_inputs: int = 0) -> int:
    """What the backward pass of one micro-batch needs kept, for `tokens` = micro_batch × sequence length.

    With bf16 autocast a decoder layer keeps, per token, about 34·h bytes of hidden-size tensors (the fp32 inputs
    and outputs of its two RMSNorms; q, k, v, the attention output and the MLP input in bf16) and 8·i bytes for the
    four intermediate-size tensors of its SwiGLU MLP in bf16; SDPA keeps O(L) per row, so there is no L² term.
    Each LoRA adapter keeps its own bf16 copy of its layer's input: 2 bytes per input feature (`lora_inputs`, summed
    over the adapted layers).
      without checkpointing: layers · tokens · (34·h + 8·i + 2·lora_inputs)
      with checkpointing:    layers · tokens · 4·h (each layer's fp32 input)
                             + tokens · (34·h + 8·i + 2·lora_inputs) (one layer recomputed at a time)
    """
    per_layer = tokens * (34 * arch.hidden + 8 * arch.intermediate + 2 * lora_inputs)
    if checkpointing:
        return arch.layers * tokens * 4 * arch.hidden + per_layer
    return arch.layers * per_layer


def logit_bytes(arch: Architecture, tokens: int, entropy: bool) -> int:
    """The vocabulary projection, computed for the completion tail only (`tokens` = micro_batch × tail).

    Per (token, vocabulary entry): the bf16 logits (2 bytes), their fp32 tempered copy and its log-softmax (4 + 4),
    and the log-softmax gradient in the backward pass (4): 14 bytes; the entropy bonus keeps exp(log p) and its
    product with log p too (8 more).
    """
    return tokens * arch.vocab * (14 + (8 if entropy else 0))


# --- what would make it fit ------------------------------------------------------------------------------------------


def _set(config, dotted: str, value):
    """A copy of a (nested) pydantic config with one key changed: _set(team, 'model.sleep_mode', True)."""
    head, _, rest = dotted.partition(".")
    return config.model_copy(update={head: _set(getattr(config, head), rest, value) if rest else value})


def _fits(team: TeamConfig, arch: Architecture, hw: Hardware) -> bool:
    return estimate(team, arch, hw).fits


def _changes(team: TeamConfig, arch: Architecture, hw: Hardware) -> list[tuple[str, object]]:
    """Settings that lower the peak, least intrusive first: (what to tell the user, (team, hw) -> (team, hw))."""
    model, train = team.model, team.train
    vllm_gpu = hw.gpu and model.engine in ("auto", "vllm")
    changes = []

    def setting(label: str, key: str, value) -> None:
        changes.append((label, lambda t, h: (_set(t, key, value), h)))

    if vllm_gpu and not model.sleep_mode:
        setting("model.sleep_mode: true (frees vLLM's share while the learner trains)", "model.sleep_mode", True)
    if not train.gradient_checkpointing:
        setting("train.gradient_checkpointing: true", "train.gradient_checkpointing", True)
    for n in range(train.micro_batch - 1, 0, -1):  # the largest that fits alone, else 1 (with other changes)
        if n == 1 or _fits(_set(team, "train.micro_batch", n), arch, hw):
            setting(f"train.micro_batch: {n}", "train.micro_batch", n)
            break
    if vllm_gpu:  # the share nearest to the current one that fits alone, else the least vLLM starts with
        now = model.gpu_memory_utilization
        shares = [round(0.05 * n, 2) for n in range(1, 20)]
        fitting = [s for s in shares if _fits(_set(team, "model.gpu_memory_utilization", s), arch, hw)]
        starts = [s for s in shares if not estimate(_set(team, "model.gpu_memory_utilization", s), arch, hw).problems]
        share = min(fitting, key=lambda s: abs(s - now)) if fitting else min(starts, default=now)
        if share != now:
            way = "lower" if share < now else "raise"
            setting(f"{way} model.gpu_memory_utilization to {share:g}", "model.gpu_memory_utilization", share)
    if hw.gpu and hw.count > 1 and train.sharding != "fsdp":
        setting(f"train.sharding: fsdp (shard the learner over the {hw.count} GPUs)", "train.sharding", "fsdp")
    if not model.lora.enabled:
        setting("turn on model.lora (model.lora.enabled: true: only adapters train)", "model.lora.enabled", True)
    elif model.lora.quantize == "none" and hw.gpu:
        setting("model.lora.quantize: 4bit (QLoRA: the frozen base in 4 bits; needs bitsandbytes)",
                "model.lora.quantize", "4bit")
    for n in (2, 4, 8) if hw.gpu else ():
        if n > hw.count:
            more = Hardware(n, hw.memory, True, hw.source)
            changes.append((f"use {n} GPUs with FSDP (model.gpus: {n}x{hw.memory / GiB:g}GB, train.sharding: fsdp)",
                            lambda t, h, more=more: (_set(t, "train.sharding", "fsdp"), more)))
    return changes


def find_fixes(team: TeamConfig, arch: Architecture, hw: Hardware) -> list[str]:
    """Each single change that makes the plan fit; else the first smallest set of changes that fits together."""
    changes = _changes(team, arch, hw)

    def fits_with(chosen) -> bool:
        t, h = team, hw
        for _, apply in chosen:
            t, h = apply(t, h)
        return _fits(t, arch, h)

    singles = [label for label, apply in changes if fits_with([(label, apply)])]
    more_gpus = [label for label in singles if label.startswith("use ")]
    if singles:
        return [label for label in singles if label not in more_gpus[1:]]  # the fewest GPUs that do
    for size in range(2, len(changes) + 1):
        for chosen in itertools.combinations(changes, size):
            if sum(label.startswith("use ") for label, _ in chosen) <= 1 and fits_with(chosen):
                return [" + ".join(label for label, _ in chosen)]
    return [f"nothing in the team file makes {team.model.name} fit on {hw.describe()}: choose a smaller "
            f"model.name or {'bigger GPUs' if hw.gpu else 'a machine with more RAM, or GPUs (model.gpus)'}"]


# --- output ----------------------------------------------------------------------------------------------------------


def render(plan: Plan) -> str:
    hw = plan.hardware
    gib = lambda n: f"{n / GiB:7.2f}"  # noqa: E731
    lines = [*plan.notes, f"hardware: {hw.describe()}", "",
             f"{'per device (the busiest one)':62} {'GiB':>7}  held while"]
    for part in plan.parts:
        held = " and ".join(part.phases)
        lines.append(f"  {part.name:60} {gib(part.bytes)}  {held}{'; ' if held and part.note else ''}{part.note}")
    lines.append("")
    for phase in BOTH:
        lines.append(f"peak while {phase:10} {gib(plan.peak(phase))} GiB of {hw.memory / GiB:.2f} GiB")
    lines += [f"problem: {problem}" for problem in plan.problems]
    if plan.fits:
        spare = hw.memory - max(plan.peak(phase) for phase in BOTH)
        lines.append(f"fits: yes, {spare / GiB:.1f} GiB to spare on each device")
    else:
        lines.append("fits: NO")
        if len(plan.fixes) == 1:
            lines.append(f"  to make it fit: {plan.fixes[0]}")
        else:
            lines += ["  any one of these makes it fit:"] + [f"    {fix}" for fix in plan.fixes]
    return "\n".join(lines)
