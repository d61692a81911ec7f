"""A DPO forward that runs each prompt once instead of twice, and the batch's common prefix once.

TRL scores a batch of pairs as 2B rows, `prompt + chosen` then `prompt + rejected`, so every
prompt goes through the model twice, and on a CPU its LM head scores every position, prompt
included. In this task the prompt is ~87% of the tokens, and most of it (chat template, the
tutorial's instructions) is the same for every pair. This forward computes, in one call:

1. the prefix every prompt in the batch shares, once (batch 1), keeping its key/value cache;
2. the rest of each prompt, once per pair (left-padded after the shared prefix);
3. the chosen and the rejected completion of each pair on top of that pair's cache;

then scores only the completion tokens and lays the results out exactly as TRL's fused LM head
does (`FusedCausalLMOutput`, per-token fields of shape `(2B, L - 1)`), so TRL's losses, metrics
and reference precompute run unchanged. Gradients flow through the caches, so the result is the
same function of the weights as TRL's forward (tested to float tolerance, gradients included).

It is installed on the model TRL patched, below PEFT, and it is still one top-level forward
call, so DDP under `accelerate launch` sees a normal step. Anything it was not built for (an
unpaired batch, no shared prefix, gradient checkpointing, extra model inputs, a model without
TRL's fused head) goes to TRL's own forward, and so does everything under TRL or transformers
releases outside the tested range (checked once, at import); one log line says so, once.
It computes the per-token fields the trainer asked TRL's head for, read from that head.
"""

from __future__ import annotations

import functools
import inspect
import logging
import types
from dataclasses import dataclass

import torch
import transformers
import trl
from accelerate.utils import is_peft_model
from packaging.specifiers import SpecifierSet
from torch.distributed.tensor import DTensor
from transformers import DynamicCache
from trl import DPOTrainer, SFTTrainer

log = logging.getLogger("pipeline.shared_prompt")

# The releases whose internals this forward was built and tested against: TRL's fused LM head
# (its output type, kernel and layout) and transformers' cache keywords. Outside them every
# trainer here is TRL's own, with one log line saying so.
SUPPORTED = {"trl": SpecifierSet(">=1.16,<1.17"), "transformers": SpecifierSet(">=5.24,<6")}
try:
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer import utils as trl_utils
    from trl.trainer.utils import FusedCausalLMOutput, maybe_gather_lm_head_ctx
except ImportError as exc:  # a TRL that moved them: the plain forward
    _MISSING: str | None = f"TRL's fused LM head is not where it was ({exc})"
else:
    _MISSING = None
# TRL's tile size for its fused head; read, not copied, where TRL still has it
CHUNK_SIZE = getattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", 32768) if not _MISSING else 0


def unsupported(versions: dict[str, str] | None = None) -> str | None:
    """Why the shared-prompt forward cannot be used with these library versions (default: the
    installed ones), or None when it can."""
    versions = versions or {"trl": trl.__version__, "transformers": transformers.__version__}
    for name, spec in SUPPORTED.items():
        if not spec.contains(versions[name], prereleases=True):
            return f"{name} {versions[name]} is outside the tested range {spec}"
    return _MISSING


# Checked once, at import; a test may set it to force the fallback.
UNSUPPORTED = unsupported()

# The model inputs this forward understands; any other keyword means "not a plain text batch".
_PLAIN_INPUTS = {"input_ids", "attention_mask", "use_cache"}
# Config fields of models whose logits are rescaled before the softmax: left to TRL's head.
_SCALED_LOGITS = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")
# The per-token fields of TRL's FusedCausalLMOutput, in the order its kernel returns them.
FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def requested_outputs(model) -> tuple[str, ...] | None:
    """The per-token fields the trainer asked TRL's fused head on `model` for (read from the
    head TRL installed), or None when `model` has no such head we can read."""
    forward = getattr(model.forward, "__func__", model.forward)
    try:
        found = inspect.getclosurevars(forward).nonlocals.get("outputs")
    except TypeError:
        return None
    if not (isinstance(found, tuple) and set(found) <= set(FIELDS) and "log_probs" in found):
        return None
    return found


_said: set[str] = set()


def say_once(reason: str) -> None:
    """One log line per reason for the whole process: the fallback is not silent, nor noisy."""
    if reason not in _said:
        _said.add(reason)
        log.warning("shared-prompt forward not used: %s; TRL's own forward runs instead", reason)


@dataclass(frozen=True)
class PromptBatch:
    """Where everything is in a TRL batch: DPO's `[chosen rows; rejected rows]` (2 rows per
    prompt) or SFT's one row per prompt."""

    prompts: int  # P
    rows_per_prompt: int  # 2 for DPO pairs, 1 for SFT
    shared: int  # length of the prefix all P prompts share, at least 1
    prompt_lengths: list[int]  # per prompt
    completion_starts: list[int]  # per TRL row: where its completion begins
    completion_lengths: list[int]  # per TRL row
    # Identical prompts (pairs of one idea in a batch) are computed once: prompt i is
    # distinct prompt `distinct_of[i]`, and `distinct` lists one prompt index per distinct one.
    distinct_of: list[int]
    distinct: list[int]

    def rows_of(self, prompt: int) -> tuple[int, ...]:
        """The TRL rows that continue prompt number `prompt`."""
        return tuple(prompt + k * self.prompts for k in range(self.rows_per_prompt))


def plan_prompt_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    rows_per_prompt: int = 2,
) -> PromptBatch | None:
    """Check the batch has TRL's layout and measure it; None when it is anything else."""
    rows, _ = input_ids.shape
    if rows == 0 or rows % rows_per_prompt:
        return None
    ids, scored = input_ids.tolist(), (labels != -100).tolist()
    mask = attention_mask.tolist() if attention_mask is not None else None
    starts, lengths = [], []
    for r in range(rows):
        length = sum(mask[r]) if mask is not None else len(ids[r])
        if mask is not None and any(mask[r][length:]):
            return None  # not right-padded
        start = scored[r].index(True) if any(scored[r]) else length
        if sum(scored[r]) != length - start or any(scored[r][length:]):
            return None  # completion not one run at the end
        starts.append(start)
        lengths.append(length - start)
    count = rows // rows_per_prompt
    prompts = []
    for i in range(count):
        first, *others = [ids[r][: starts[r]] for r in range(i, rows, count)]
        if not first or any(other != first for other in others):
            return None  # the rows of a prompt must carry the same, non-empty prompt
        prompts.append(first)
    shared = min(len(p) for p in prompts) - 1  # every pair keeps at least its last prompt token
    for p in prompts[1:]:
        shared = next((k for k in range(shared) if p[k] != prompts[0][k]), shared)
    if shared < 1:
        return None  # with nothing shared, a left-padded row would attend to nothing
    first_seen: dict[tuple[int, ...], int] = {}
    distinct_of = [first_seen.setdefault(tuple(p), len(first_seen)) for p in prompts]
    distinct = [distinct_of.index(d) for d in range(len(first_seen))]
    return PromptBatch(
        count,
        rows_per_prompt,
        shared,
        [len(p) for p in prompts],
        starts,
        lengths,
        distinct_of,
        distinct,
    )


def shared_prompt_logprobs(model, input_ids: torch.Tensor, plan: PromptBatch, outputs: tuple):
    """Per-token fields for the completion tokens of every TRL row, scattered into `(rows, L-1)`
    as TRL's fused head lays them out: the prompts run once, then each row's completion on its
    prompt's cache, then only the completion tokens are scored."""
    backbone = getattr(model, model.base_model_prefix)
    cache, prompt_mask, last_hidden = _run_prompts(model, backbone, input_ids, plan)
    completions = _run_completions(backbone, input_ids, plan, cache, prompt_mask, last_hidden)
    return _score_completions(model, input_ids, plan, *completions, outputs)


def _run_prompts(model, backbone, input_ids: torch.Tensor, plan: PromptBatch):
    """Steps 1 and 2: the cache of every distinct prompt, its attention mask, and the hidden
    state of each prompt's last token (which predicts completion token 0)."""
    device, shared = input_ids.device, plan.shared

    # 1. The shared prefix, once.
    distinct = len(plan.distinct)
    cache = DynamicCache(config=model.config)
    backbone(input_ids=input_ids[:1, :shared], cache=cache, use_cache=True)
    cache.batch_repeat_interleave(distinct)

    # 2. The rest of each distinct prompt, left-padded so that every prompt ends in the last
    #    column (the pairs of one idea share all of it: it runs once for them).
    lengths = [plan.prompt_lengths[i] for i in plan.distinct]
    rest = max(lengths) - shared
    rest_ids = torch.zeros(distinct, rest, dtype=input_ids.dtype, device=device)
    rest_mask = torch.zeros(distinct, rest, dtype=torch.long, device=device)
    for d, (i, length) in enumerate(zip(plan.distinct, lengths, strict=True)):
        own = length - shared
        rest_ids[d, rest - own :] = input_ids[i, shared:length]
        rest_mask[d, rest - own :] = 1
    prompt_mask = torch.cat([rest_mask.new_ones(distinct, shared), rest_mask], dim=1)
    positions = shared + (rest_mask.cumsum(1) - 1).clamp(min=0)
    prompt_out = backbone(
        input_ids=rest_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
    )
    return cache, prompt_mask, prompt_out.last_hidden_state[:, -1:]


def _run_completions(backbone, input_ids, plan: PromptBatch, cache, prompt_mask, last_hidden):
    """Step 3: the completions of each prompt on that prompt's cache, rows grouped by prompt
    (for DPO: chosen, rejected, chosen, rejected, ...); the hidden states that predict each
    completion token, with the completions' ids, mask and TRL row numbers."""
    device, count, group = input_ids.device, plan.prompts, plan.rows_per_prompt
    trl_rows = [row for i in range(count) for row in plan.rows_of(i)]
    cache_of_row = torch.tensor(
        [plan.distinct_of[i] for i in range(count) for _ in range(group)], device=device
    )
    width = max(max(plan.completion_lengths), 1)
    comp_ids = torch.zeros(group * count, width, dtype=input_ids.dtype, device=device)
    comp_mask = torch.zeros(group * count, width, dtype=torch.long, device=device)
    for k, row in enumerate(trl_rows):
        start, length = plan.completion_starts[row], plan.completion_lengths[row]
        comp_ids[k, :length] = input_ids[row, start : start + length]
        comp_mask[k, :length] = 1
    cache.reorder_cache(cache_of_row)  # each row gets its prompt's keys and values
    starts = torch.tensor(plan.prompt_lengths).repeat_interleave(group)
    comp_out = backbone(
        input_ids=comp_ids,
        attention_mask=torch.cat([prompt_mask[cache_of_row], comp_mask], dim=1),
        position_ids=(starts[:, None] + torch.arange(width)[None]).to(device),
        cache=cache,
        use_cache=True,
    )
    hidden = torch.cat([last_hidden[cache_of_row], comp_out.last_hidden_state[:, :-1]], dim=1)
    return hidden, comp_ids, comp_mask, trl_rows


def _score_completions(model, input_ids, plan, hidden, comp_ids, comp_mask, trl_rows, outputs):
    """Score only the completion tokens, then put them where TRL's layout has them: row
    `row`, column `start - 1 + j` (the position whose next token is completion token j)."""
    device, width = input_ids.device, comp_ids.size(1)
    valid = comp_mask.bool()
    lm_head = model.get_output_embeddings()
    weight, bias = lm_head.weight, lm_head.bias
    if isinstance(weight, DTensor):  # FSDP2 shards it; TRL's head gathers it the same way
        weight = weight.full_tensor()
        bias = bias.full_tensor() if bias is not None else None
    with maybe_gather_lm_head_ctx(weight, bias):  # DeepSpeed ZeRO-3: gathered for direct use
        per_token = ChunkedLogProbFunction.apply(
            hidden[valid],
            weight,
            bias,
            comp_ids[valid],
            1.0,
            CHUNK_SIZE,
            getattr(model.config, "final_logit_softcapping", None),
            1.0,
            outputs,
        )
    rows = torch.tensor(trl_rows, device=device)[:, None].expand(-1, width)[valid]
    cols = torch.tensor(
        [[plan.completion_starts[row] - 1 + j for j in range(width)] for row in trl_rows],
        device=device,
    )[valid]
    shape = (input_ids.size(0), input_ids.size(1) - 1)
    fields = []
    for values in per_token:
        if values is None:
            fields.append(None)
        else:
            fields.append(values.new_zeros(shape).index_put((rows, cols), values))
    label_mask = torch.zeros(shape, dtype=torch.bool, device=device).index_put(
        (rows, cols), torch.ones_like(rows, dtype=torch.bool)
    )
    return fields, label_mask


def _checkpointing(model) -> bool:
    """Whether activation checkpointing is on. transformers 5.25 renamed the property and the
    old name warns on every read: once a forward, a line in the run's log each step."""
    if hasattr(type(model), "is_activation_checkpointing"):
        return model.is_activation_checkpointing
    return model.is_gradient_checkpointing


def add_shared_prompt_forward(model, outputs: tuple[str, ...], rows_per_prompt: int = 2) -> None:
    """Route `model(..., labels=..., fused_lm_head=True)` on TRL batches (DPO pairs, or SFT rows
    with `rows_per_prompt=1`) through the shared-prompt forward. `model` is the causal LM TRL
    patched (below PEFT, if any)."""
    fused_forward = model.forward  # TRL's, bound to `model`

    @functools.wraps(type(model).forward)
    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # PEFT passes Nones
        plan = None
        if (
            fused_lm_head
            and not args
            and labels is not None
            and set(kwargs) <= _PLAIN_INPUTS
            and not (self.training and _checkpointing(self))
            and not any(getattr(self.config, name, None) is not None for name in _SCALED_LOGITS)
        ):
            ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
            plan = plan_prompt_batch(ids, mask, labels, rows_per_prompt)
        if plan is None:
            if fused_lm_head:
                say_once("a batch that is not a plain text batch in TRL's layout")
            return fused_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        fields, label_mask = shared_prompt_logprobs(self, kwargs["input_ids"], plan, outputs)
        log_probs = fields[0]
        loss = -log_probs.sum() / label_mask.sum().clamp(min=1)
        return FusedCausalLMOutput(
            loss=loss,
            log_probs=log_probs,
            entropy=fields[1],
            log_sum_sq_probs=fields[2],
            mean_logits=fields[3],
            is_top1=fields[4],
            label_mask=label_mask,
        )

    forward._shared_prompt_rows = rows_per_prompt
    model.forward = types.MethodType(forward, model)


def has_shared_prompt_forward(model, rows_per_prompt: int) -> bool:
    """Whether `model`'s outermost forward is ours, for this layout. (A trainer that patches the
    forward again after us, as TRL does at start, puts its own on top: then it is not.)"""
    return getattr(model.forward, "_shared_prompt_rows", None) == rows_per_prompt


class PromptGroupedSampler(torch.utils.data.Sampler):
    """Random training order in which the rows of one prompt come `chunk` at a time.

    With the forward above, rows of one prompt in a batch share the whole prompt's computation,
    so a batch of 8 pairs drawn as two chunks of 4 runs 2 prompts instead of 8. Each epoch:
    every prompt's rows are shuffled and cut into chunks, and the chunks are shuffled; the
    order depends only on (seed, epoch), so a resumed run sees the same batches.
    """

    def __init__(self, keys: list, chunk: int, seed: int) -> None:
        self.groups: dict = {}
        for index, key in enumerate(keys):
            self.groups.setdefault(key, []).append(index)
        self.size, self.chunk, self.seed, self.epoch = len(keys), chunk, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        chunks = []
        for members in self.groups.values():
            shuffled = [members[j] for j in torch.randperm(len(members), generator=generator)]
            chunks += [shuffled[k : k + self.chunk] for k in range(0, len(shuffled), self.chunk)]
        for c in torch.randperm(len(chunks), generator=generator).tolist():
            yield from chunks[c]


def prompt_keys(dataset) -> list | None:
    """The prompt of each row of a TRL-tokenized dataset (DPO: `prompt_ids`; SFT: the tokens
    before the completion), or None when it has neither."""
    columns = dataset.column_names
    if "prompt_ids" in columns:
        return [tuple(ids) for ids in dataset["prompt_ids"]]
    if "completion_mask" in columns:
        return [
            tuple(ids[: mask.index(1)] if 1 in mask else ids)
            for ids, mask in zip(dataset["input_ids"], dataset["completion_mask"], strict=True)
        ]
    return None


class _PromptGroupedTraining:
    """`prompt_chunk=N` (N > 0): train in `PromptGroupedSampler` order."""

    prompt_chunk = 0

    # transformers' Trainer has no public hook for the sampler; this is the method its own
    # docs and subclasses override, and a dataset without prompt keys gets the Trainer's own.
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        keys = prompt_keys(dataset) if self.prompt_chunk else None
        if keys is None:
            return super()._get_train_sampler(train_dataset)
        return PromptGroupedSampler(keys, self.prompt_chunk, self.args.seed)


def install(model, rows_per_prompt: int) -> bool:
    """Put the shared-prompt forward on `model` (the causal LM under any PEFT wrapper), computing
    the fields the trainer asked TRL's head for; False, with one log line, where it cannot."""
    if UNSUPPORTED:
        say_once(UNSUPPORTED)
        return False
    if has_shared_prompt_forward(model, rows_per_prompt):
        return True
    outputs = requested_outputs(model)
    if outputs is None:
        say_once("the model has no TRL fused LM head whose fields can be read")
        return False
    add_shared_prompt_forward(model, outputs, rows_per_prompt)
    return True


def _causal_lm(model):
    return model.get_base_model() if is_peft_model(model) else model


class SharedPromptDPOTrainer(_PromptGroupedTraining, DPOTrainer):
    """TRL's DPOTrainer with the shared-prompt forward on its policy (and reference model).

    The forward is installed on first use: after TRL has added its fused LM head and wrapped the
    model in PEFT, before it precomputes the reference log-probs (adapter off: same forward).
    """

    def __init__(self, *args, prompt_chunk: int = 0, **kwargs) -> None:
        self.prompt_chunk = prompt_chunk
        super().__init__(*args, **kwargs)

    def _install_shared_prompt(self) -> None:
        install(_causal_lm(self.model), rows_per_prompt=2)
        if self.ref_model is not None:
            # A full fine-tune's reference is a second model (TRL gave it a log-probs-only
            # head): its passes share prompts the same way.
            install(self.accelerator.unwrap_model(self.ref_model), rows_per_prompt=2)

    def compute_ref_log_probs(self, model, inputs):
        self._install_shared_prompt()
        return super().compute_ref_log_probs(model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._install_shared_prompt()  # training and evaluation both come through here
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class SharedPromptSFTTrainer(_PromptGroupedTraining, SFTTrainer):
    """TRL's SFTTrainer with the same forward, one row per prompt: the batch's common prefix
    computed once (and a prompt shared by several rows once) and only the completion tokens
    scored."""

    def __init__(self, *args, prompt_chunk: int = 0, **kwargs) -> None:
        self.prompt_chunk = prompt_chunk
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        install(_causal_lm(self.model), rows_per_prompt=1)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
