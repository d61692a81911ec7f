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
unpaired batch, no shared prefix, gradient checkpointing, extra model inputs) goes to TRL's own
forward.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch
from accelerate.utils import is_peft_model
from torch.distributed.tensor import DTensor
from transformers import DynamicCache
from trl import DPOTrainer, SFTTrainer
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import FusedCausalLMOutput, maybe_gather_lm_head_ctx

# The model inputs this forward understands; any other keyword means "not a plain text batch".
_PLAIN_INPUTS = {"input_ids", "attention_mask", "use_cache"}
# Config fields of models whose logits are rescaled before the softmax: left to TRL's head.
_SCALED_LOGITS = ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


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
    return PromptBatch(count, rows_per_prompt, shared, [len(p) for p in prompts], starts, lengths,
                       distinct_of, distinct)  # fmt: skip


def shared_prompt_logprobs(model, input_ids: torch.Tensor, plan: PromptBatch, outputs: tuple):
    """Per-token fields for the completion tokens of every TRL row, scattered into `(rows, L-1)`
    as TRL's fused head lays them out."""
    device = input_ids.device
    backbone = getattr(model, model.base_model_prefix)
    count, shared, group = plan.prompts, plan.shared, plan.rows_per_prompt

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
    last_prompt_hidden = prompt_out.last_hidden_state[:, -1:]  # predicts completion token 0

    # 3. The completions of each prompt on that prompt's cache; rows grouped by prompt
    #    (for DPO: chosen, rejected, chosen, rejected, ...).
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
    hidden = torch.cat(
        [last_prompt_hidden[cache_of_row], comp_out.last_hidden_state[:, :-1]], dim=1
    )

    # Score only the completion tokens, then put them where TRL's layout has them:
    # row `row`, column `start - 1 + j` (the position whose next token is completion token j).
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
            32768,
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
            and not (self.training and self.is_gradient_checkpointing)
            and not any(getattr(self.config, name, None) is not None for name in _SCALED_LOGITS)
        ):
            ids, mask = kwargs["input_ids"], kwargs.get("attention_mask")
            plan = plan_prompt_batch(ids, mask, labels, rows_per_prompt)
        if plan is None:
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

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        keys = prompt_keys(dataset) if self.prompt_chunk else None
        if keys is None:
            return super()._get_train_sampler(train_dataset)
        return PromptGroupedSampler(keys, self.prompt_chunk, self.args.seed)


class SharedPromptDPOTrainer(_PromptGroupedTraining, DPOTrainer):
    """TRL's DPOTrainer with the shared-prompt forward on its policy (and reference model).

    The forward is installed on first use: after TRL has added its fused LM head and wrapped the
    model in PEFT, before it precomputes the reference log-probs (adapter off: same forward).
    """

    def __init__(self, *args, prompt_chunk: int = 0, **kwargs) -> None:
        self.prompt_chunk = prompt_chunk
        super().__init__(*args, **kwargs)

    def _install_shared_prompt(self) -> None:
        model = self.model.get_base_model() if is_peft_model(self.model) else self.model
        if not has_shared_prompt_forward(model, 2):
            outputs = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
            add_shared_prompt_forward(model, outputs)
        if self.ref_model is not None:
            # A full fine-tune's reference is a second model (TRL gave it a log-probs-only
            # head): its passes share prompts the same way.
            reference = self.accelerator.unwrap_model(self.ref_model)
            if not has_shared_prompt_forward(reference, 2):
                add_shared_prompt_forward(reference, ("log_probs",))

    def compute_ref_log_probs(self, model, inputs):
        self._install_shared_prompt()
        return super().compute_ref_log_probs(model, inputs)

    def _compute_loss(self, model, inputs, return_outputs):
        self._install_shared_prompt()
        return super()._compute_loss(model, inputs, return_outputs)


class SharedPromptSFTTrainer(_PromptGroupedTraining, SFTTrainer):
    """TRL's SFTTrainer with the same forward, one row per prompt: the batch's common prefix
    computed once (and a prompt shared by several rows once) and only the completion tokens
    scored."""

    def __init__(self, *args, prompt_chunk: int = 0, **kwargs) -> None:
        self.prompt_chunk = prompt_chunk
        super().__init__(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        base = self.model.get_base_model() if is_peft_model(self.model) else self.model
        if not has_shared_prompt_forward(base, 1):
            add_shared_prompt_forward(base, ("log_probs", "entropy", "is_top1"), rows_per_prompt=1)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
