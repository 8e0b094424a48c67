"""team.yaml: the schema of a team, with every option documented where it is declared.

Load a file with `botlab.teamfile.load_team(path)`; it turns schema errors into messages with field paths and lines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

TaskType = Literal["deduction", "abduction", "induction"]
TASK_TYPES: tuple[TaskType, ...] = ("deduction", "abduction", "induction")
BUILTIN_MODEL = "builtin:smollm2-135m"

_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class Strict(BaseModel):
    """Base of every section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def parse_duration(value: str | int | float) -> float:
    """'90s', '30m', '6h', '1d' or a number of seconds -> seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration: use a number of seconds or e.g. '90s', '30m', '6h', '1d'")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def check_env_name(value: str | None) -> str | None:
    """Secrets are referenced by environment-variable name; catch a secret pasted inline."""
    if value is None:
        return None
    if value.startswith(("nsec1", "sk-")) or not _ENV_NAME.match(value):
        raise ValueError(
            f"must be the NAME of an environment variable (like BOTLAB_SMTP_PASSWORD), not {_redact(value)}; "
            "secrets are never written in team.yaml"
        )
    return value


def _redact(value: str) -> str:
    return repr(value[:4] + "…") if len(value) > 6 else repr(value)


# A secret is referenced by the name of the environment variable that holds it.
EnvName = Annotated[str, AfterValidator(check_env_name)]


# --- model -----------------------------------------------------------------------------------------------------------


class LoraConfig(Strict):
    enabled: bool = False
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class ModelConfig(Strict):
    name: str = Field(
        BUILTIN_MODEL,
        description="'builtin:smollm2-135m' (shipped offline), a local Hugging Face folder, or a hub id already cached",
    )
    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="rollout engine; auto takes vLLM when it imports, else transformers"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="weights dtype in the rollout engine; the learner keeps fp32 master weights"
    )
    max_model_len: int = Field(2048, ge=256, description="prompt + completion tokens the engine accepts")
    gpu_memory_utilization: float = Field(0.45, gt=0, le=1, description="vLLM share of GPU memory (colocated learner)")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor parallel degree")
    enforce_eager: bool = Field(True, description="skip vLLM graph capture/compilation (fast start, slower decode)")
    cpu_kv_cache_gib: float = Field(2, gt=0, description="KV cache size of the vLLM CPU backend, GiB")
    sleep_mode: bool = Field(False, description="let vLLM release GPU memory while the learner trains")
    transformers_batch_size: int = Field(
        64, ge=1, description="sequences per generate call of the transformers engine (bounds its KV-cache memory)"
    )
    lora: LoraConfig = Field(default_factory=LoraConfig)


# --- roles -----------------------------------------------------------------------------------------------------------


class SamplingConfig(Strict):
    temperature: float = Field(1.0, ge=0, description="1.0 as in AZR: learnability needs diverse samples")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=8, description="completion budget per turn")
    prime_answer: bool = Field(
        False, description="start each reply inside its answer block (```python / ```output ...): small models then "
        "answer in format from step 1; larger models do better reasoning first"
    )


class ProposerConfig(SamplingConfig):
    max_new_tokens: int = Field(384, ge=8)


class SolverConfig(SamplingConfig):
    max_new_tokens: int = Field(256, ge=8)


class ReviewerConfig(Strict):
    enabled: bool = Field(True, description="gate valid proposals before they enter a buffer")
    near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="similarity of normalised programs above which a proposal is a near duplicate"
    )
    llm: bool = Field(False, description="add an LLM review pass after the rule-based one")
    model: str = Field("policy", description="'policy' (the trained model) or a litellm model string")
    api_key_env: EnvName | None = Field(None, description="env var with the API key of a litellm model")
    rules: list[str] = Field(default_factory=list, description="extra plain-language rules for the LLM pass")


class ReporterConfig(Strict):
    model: str = Field(
        "template", description="'template' (deterministic text), 'policy', or a litellm model string"
    )
    api_key_env: EnvName | None = Field(None, description="env var with the API key of a litellm model")
    max_words: int = Field(180, ge=20, description="narratives longer than this fall back to the template")


class RolesConfig(Strict):
    proposer: ProposerConfig = Field(default_factory=ProposerConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    reviewer: ReviewerConfig = Field(default_factory=ReviewerConfig)
    reporter: ReporterConfig = Field(default_factory=ReporterConfig)


# --- self-play and training ------------------------------------------------------------------------------------------


class SelfPlayConfig(Strict):
    task_types: list[TaskType] = Field(default_factory=lambda: list(TASK_TYPES), min_length=1)
    propose_batch: int = Field(64, ge=1, description="proposals per task type per step (AZR: 64)")
    solve_batch: int = Field(64, ge=1, description="solver tasks per task type per step (AZR: 64)")
    references: int = Field(6, ge=0, description="K reference triplets shown to the proposer (AZR io_n: 6)")
    learnability_rollouts: int = Field(8, ge=2, description="n solver samples per proposal for 1 - solve rate")
    seed_size: int = Field(256, ge=1, description="buffer size per type gathered (no updates) before training")
    seed_max_rounds: int = Field(
        50, ge=0, description="seeding gives up after this many propose rounds and trains with what it has"
    )
    buffer_max: int = Field(16384, ge=16, description="programs kept per buffer before eviction")
    eviction: Literal["oldest", "lowest_reward"] = Field(
        "oldest", description="which program a full buffer drops (AZR instead stops accepting at 16384)"
    )
    induction_inputs: int = Field(10, ge=2, description="inputs an induction proposal must give")
    induction_visible: int = Field(5, ge=1, description="of those, shown to the solver; the rest are hidden tests")

    @model_validator(mode="after")
    def _visible_below_inputs(self) -> "SelfPlayConfig":
        if self.induction_visible >= self.induction_inputs:
            raise ValueError("induction_visible must be smaller than induction_inputs (the rest are hidden tests)")
        return self


class TrainConfig(Strict):
    steps: int = Field(500, ge=1, description="self-play steps of a full run (AZR paper: 500)")
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate, constant")
    weight_decay: float = Field(0.0, ge=0)
    clip_eps: float = Field(0.2, gt=0, description="PPO clip range below 1")
    clip_eps_high: float | None = Field(None, gt=0, description="upper clip (DAPO uses 0.28); default = clip_eps")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus weight (AZR paper branch: 0.001)")
    kl_coef: float = Field(0.0, ge=0, description="KL penalty to the initial policy; 0 keeps no reference model")
    grad_clip: float = Field(1.0, gt=0)
    micro_batch: int = Field(8, ge=1, description="sequences per forward/backward; gradients accumulate over the batch")
    bf16_autocast: bool = Field(True, description="bf16 autocast for forward/backward (2.5x faster on AMX CPUs)")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations during the backward pass: far less memory (the demo's peak drops "
        "by about 2.4 GB) for about a quarter more compute; for long sequences and big models"
    )
    format_penalty: float = Field(-1.0, le=0, description="reward of an unparseable or invalid output")
    wrong_penalty: float = Field(-0.5, le=0, description="reward of a well-formed but wrong/unlearnable output")
    seed: int = 0


class ExecutorConfig(Strict):
    """The sandbox that validates proposals and checks answers (botlab.sandbox); reasons in runtime/reasons.py."""

    workers: int | Literal["auto"] = Field(
        "auto", description="programs run at once (each in its own process); auto = CPUs available to us"
    )
    timeout_s: float = Field(5.0, gt=0, description="wall-clock limit per program run, all of its inputs (hard kill)")
    cpu_s: int = Field(5, ge=1, description="CPU-time limit per program run")
    memory_mb: int = Field(512, ge=64, description="address-space limit of each program process")
    max_input_chars: int = Field(1000, ge=10, description="longest input (or abduction answer) text")
    max_output_chars: int = Field(1000, ge=10, description="canonical reprs longer than this make a task invalid")
    max_program_chars: int = Field(20000, ge=100, description="longest program text the gate will parse")
    banned_modules: list[str] | None = Field(None, description="replaces the built-in list of forbidden imports")
    extra_banned_modules: list[str] = Field(default_factory=list, description="added to the forbidden imports")
    banned_builtins: list[str] | None = Field(
        None, description="replaces the built-in list of forbidden builtins (eval, exec, open, __import__, ...)"
    )
    block_introspection: bool = Field(
        True,
        description="reject dunder, frame and private-module attribute access (the classic escape routes); "
        "turn off only to test the OS-level isolation",
    )
    allow_none_output: bool = Field(False, description="accept tasks whose f returns None (AZR did, by accident)")
    extra_preload: list[str] = Field(
        default_factory=list,
        description="standard-library modules loaded in the workers besides the built-in set; programs can import "
        "only loaded modules where the confined user cannot read the interpreter's files",
    )
    namespaces: bool = Field(
        True, description="isolate with Linux namespaces (network, pid, mount; user ns when not root) where allowed"
    )
    tasks_per_worker: int = Field(
        10000, ge=1, description="a fork-server worker is replaced after this many runs (each run is a new process)"
    )

    @field_validator("banned_modules", "extra_banned_modules", "banned_builtins", "extra_preload")
    @classmethod
    def _dotted_names(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
                raise ValueError(f"{name!r} is not a module or builtin name")
        return v


class ObservabilityConfig(Strict):
    wandb_project: str | None = Field(
        None, description="also log metrics to this Weights & Biases project (needs `pip install wandb`)"
    )


class SchedulesConfig(Strict):
    digest_every: str | float = Field("6h", description="how often the reporter sends a digest; 0 = never")
    feedback_poll_every: str | float = Field("60s", description="how often mail/Nostr are checked for replies")
    eval_every_steps: int = Field(0, ge=0, description="held-out evaluation every N steps; 0 = off")
    eval_suite: str = Field("cruxeval-o", description="suite used by the periodic evaluation")
    eval_data: Path | None = Field(None, description="JSONL file for CRUXEval-style suites")
    eval_limit: int = Field(100, ge=1)
    checkpoint_every_steps: int = Field(10, ge=1, description="Hugging Face checkpoint every N steps")
    keep_checkpoints: int = Field(3, ge=1, description="older checkpoints are pruned")
    keep_samples_steps: int = Field(
        1000, ge=0, description="prompts and replies of the last N steps are kept in the store (older ones are "
        "deleted, so the database stops growing on a run of weeks); 0 keeps all. Tasks and metrics are always kept"
    )

    @field_validator("digest_every", "feedback_poll_every")
    @classmethod
    def _duration(cls, v: str | float) -> str | float:
        parse_duration(v)
        return v

    def seconds(self, field: str) -> float:
        return parse_duration(getattr(self, field))


# --- notifiers -------------------------------------------------------------------------------------------------------


class ConsoleNotifier(Strict):
    enabled: bool = True


class EmailNotifier(Strict):
    enabled: bool = True
    from_addr: str = Field(description="the team's address; digests come from it, replies go to it")
    to: list[str] = Field(min_length=1, description="recipients of digests")
    allowed_senders: list[str] | None = Field(None, description="who may steer by reply; default = `to`")
    smtp_host: str
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    imap_host: str | None = Field(None, description="where replies are read; none = send only")
    imap_port: int = Field(993, ge=1, le=65535)
    imap_security: Literal["tls", "none"] = "tls"
    username_env: EnvName | None = Field(None, description="env var with the SMTP/IMAP user name")
    password_env: EnvName | None = Field(None, description="env var with the SMTP/IMAP password")
    dkim_required: bool = Field(False, description="accept replies only with a valid DKIM signature of the sender")
    ca_file: Path | None = Field(
        None, description="PEM file of the CA to trust for SMTP/IMAP TLS (a self-hosted server); default: the system's"
    )


class NostrNotifier(Strict):
    enabled: bool = True
    nsec_env: EnvName = Field(description="env var holding the team's nsec key")
    relays: list[str] = Field(min_length=1, description="relay URLs (ws:// or wss://)")
    recipients: list[str] = Field(min_length=1, description="npub (or hex) keys that receive digests by NIP-17 DM")
    allowed_pubkeys: list[str] | None = Field(None, description="who may steer by DM; default = recipients")
    public_notes: bool = Field(False, description="also publish a short public kind-1 progress note")
    reconnect_s: float = Field(10, ge=5, description="seconds between reconnection attempts to a lost relay (min 5)")

    @field_validator("relays")
    @classmethod
    def _relay_urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"relay {url!r} must start with ws:// or wss://")
        return v


class NotifiersConfig(Strict):
    console: ConsoleNotifier = Field(default_factory=ConsoleNotifier)
    email: EmailNotifier | None = None
    nostr: NostrNotifier | None = None


# --- the team --------------------------------------------------------------------------------------------------------


class TeamConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="used in paths and subjects")
    goal: str = Field("", description="free text the team works towards; enters the proposer prompt")
    storage_dir: Path = Field(Path("runs"), description="run data lives in STORAGE_DIR/NAME; relative to the file")
    model: ModelConfig = Field(default_factory=ModelConfig)
    roles: RolesConfig = Field(default_factory=RolesConfig)
    selfplay: SelfPlayConfig = Field(default_factory=SelfPlayConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    schedules: SchedulesConfig = Field(default_factory=SchedulesConfig)
    notifiers: NotifiersConfig = Field(default_factory=NotifiersConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)

    # Set by the loader, not by the file: the team file's path, for relative paths.
    _source: Path | None = PrivateAttr(None)

    def resolve_path(self, path: Path) -> Path:
        """Paths in the file are relative to the file."""
        if not path.is_absolute() and self._source is not None:
            path = self._source.parent / path
        return path.resolve()

    @property
    def run_dir(self) -> Path:
        return self.resolve_path(self.storage_dir) / self.name
