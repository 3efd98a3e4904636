"""Capacity planning: inverse questions answered by exact integer search on the estimator.

Does it fit (and with what headroom)? Largest batch? Longest context? Fewest GPUs? Every
answer is an exact integer found by doubling then binary search on a quantity whose peak
memory grows monotonically with it, and is verified: the maximum fits, maximum + 1 does not.
Each answer names the first size that does not fit and the memory term that grew most.
Chunked attention's peak is not monotone in the context (it falls at chunk boundaries):
``largest_sawtooth`` searches it segment by segment; the answer is still the largest n such
that every n' <= n fits, and ``Limit.longest_fitting`` adds the largest n that fits at all.

Sharding (per GPU, n_gpus = dp * tp; ``batch_size`` is the micro-batch of one replica):
- Training: the per-rank estimate of estimator.estimate(..., parallel=Parallel(...))
  (estimator/terms/ranks.py): zero 1 = torch's ZeroRedundancyOptimizer (optimizer states
  of whole tensors partitioned), zero 2 / 3 = FSDP2 fully_shard per layer and at the root
  with reshard_after_forward False / True (parameters, gradients and optimizer states in
  padded dim-0 shards; the gathered units live while gathered, the backward replay uses the
  rank's own tensors), tp = DTensor tensor parallelism (Colwise / Rowwise attention and FFN,
  vocabulary-parallel embedding and head; ``sp``: SequenceParallel norms). Its collectives
  are the estimate's ``comm``.
- Inference: ZeRO does not apply (it shards training state); tensor parallelism divides by
  tp the share of the weights that belongs to the layers (by parameter count, exact), every
  per-layer activation term and the KV cache; embeddings, positions, final norm and head
  are replicated (Megatron-LM, Shoeybi et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from estimator.spec.errors import SpecError
from estimator.spec.model import ModelSpec
from estimator.spec.workload import Workload

Est = Any  # estimator.breakdown.Estimate (imported lazily)
SEARCH_CAP = 2**24  # the largest batch / context / GPU count searched


class Sharding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_gpus: int = Field(1, gt=0)
    zero: Literal[0, 1, 2, 3] = 0
    tp: int = Field(1, gt=0)
    # issue 18
    sp: bool = False
    # issue 18 (wrapping): the FSDP2 units under zero 2 / 3 (Parallel.wrap)
    wrap: Literal["blocks", "torchtitan"] = "blocks"

    @property
    def dp(self) -> int:
        return self.n_gpus // self.tp

    def parallel(self) -> Any:
        """The estimator's Parallel of this layout (estimator.spec.parallel)."""
        from estimator.spec.parallel import Parallel

        shard = ("none", "zero1", "zero2", "zero3")[self.zero]
        wrap = self.wrap if self.zero >= 2 else "blocks"  # units exist under FSDP2 only
        sp = self.sp and self.tp > 1
        return Parallel(world=self.n_gpus, tp=self.tp, sp=sp, shard=shard, wrap=wrap)


def check_sharding(spec: ModelSpec, sharding: Sharding) -> None:
    """tp must divide n_gpus and the (key/value) heads; SpecError otherwise."""
    if sharding.n_gpus % sharding.tp:
        raise SpecError(f"tp={sharding.tp} is invalid: must divide gpus={sharding.n_gpus}")
    if spec.n_kv_heads % sharding.tp:
        raise SpecError(
            f"tp={sharding.tp} is invalid: must divide n_kv_heads={spec.n_kv_heads} of {spec.name}"
        )


def _layer_share(est: Est) -> float:
    """Fraction of the parameters that sit in the layers (split by tensor parallelism)."""
    params = est.params
    layers = sum(v for k, v in params.terms.items() if ".layers." in k)
    return layers / params.total if params.total else 0.0


def rank_estimate(est: Est, sharding: Sharding | None) -> Est | None:
    """The per-rank Estimate of a training ``est`` under ``sharding`` (None: one GPU, or
    not training)."""
    if sharding is None or sharding.n_gpus == 1 or not est.workload.is_training:
        return None
    from estimator.estimate import estimate

    return estimate(est.spec, est.workload, parallel=sharding.parallel())


def sharded_terms(est: Est, sharding: Sharding) -> dict[str, int]:
    """Per-GPU memory terms of ``est`` under ``sharding``: training, the per-rank estimate's;
    inference, tensor parallelism's split (ceil division, exact ints)."""
    rank = rank_estimate(est, sharding)
    if rank is not None:
        return dict(rank.memory.terms)
    tp = sharding.tp
    share = _layer_share(est)
    out: dict[str, int] = {}
    for name, value in est.memory.terms.items():
        weights = name == "weights" or name.startswith("weights.")  # issue 20: base4bit, adapters
        state = weights or name == "gradients" or name.startswith("optimizer.")
        if state and tp > 1:
            layers = int(value * share)
            value = value - layers + -(-layers // tp)
        elif tp > 1 and (name.startswith("kv_cache.") or ".layers." in name):
            value = -(-value // tp)
        out[name] = value
    return out


def peak_bytes(est: Est, sharding: Sharding | None = None) -> tuple[int, str]:
    """Per-GPU (peak bytes, phase). Training: the per-rank estimate's own timeline
    (estimator.estimate(parallel=...)). Inference under tp: the estimator's timeline
    (estimator.replay.peak) re-evaluated on the split terms, the decode phase's longest
    cache divided by tp too. One GPU: exactly the Estimate's peak."""
    rank = rank_estimate(est, sharding)
    if rank is not None:
        return rank.peak_memory_bytes, rank.peak_phase
    if sharding is None or sharding.tp == 1:
        return est.peak_memory_bytes, est.peak_phase
    from estimator.replay.peak import peak_memory
    from estimator.shapes import resolve
    from estimator.terms.kv_cache import kv_cache_max_bytes

    terms = sharded_terms(est, sharding)
    spec, wl = est.spec, est.workload
    sh = resolve(spec, wl)
    peak, phase = peak_memory(spec, sh, terms)
    if phase == "decode" and wl.kv_cache and sharding.tp > 1:
        kv_max = kv_cache_max_bytes(spec, sh)
        peak -= kv_max - -(-kv_max // sharding.tp)
    return peak, phase


class Fit(BaseModel):
    """Does one workload fit? Peak per GPU vs the usable budget, with the terms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fits: bool
    peak_bytes: int
    usable_bytes: int
    headroom_bytes: int = Field(description="usable - peak; negative when it does not fit")
    peak_phase: str
    terms: dict[str, int]
    # issue 18 (wrapping): training over several GPUs, rank 0's peak beyond its resident
    # terms by label (Estimate.peak_parts); None where not named
    parts: dict[str, int] | None = None


def fit(est: Est, usable: int, sharding: Sharding | None = None) -> Fit:
    rank = rank_estimate(est, sharding)
    parts = None
    if rank is not None:  # training over several GPUs: rank 0's own estimate
        peak, phase, terms = rank.peak_memory_bytes, rank.peak_phase, dict(rank.memory.terms)
        parts = rank.peak_parts
    else:
        peak, phase = peak_bytes(est, sharding)
        terms = sharded_terms(est, sharding) if sharding else dict(est.memory.terms)
    return Fit(
        fits=peak <= usable,
        peak_bytes=peak,
        usable_bytes=usable,
        headroom_bytes=usable - peak,
        peak_phase=phase,
        terms=terms,
        parts=parts,
    )


class Limit(BaseModel):
    """The largest value of a quantity that fits, and the next one up that does not."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quantity: str
    max_value: int | None = Field(description="None: even the smallest value does not fit")
    max_fit: Fit | None
    next_value: int | None = Field(description="max + 1 (None when capped by the model)")
    next_fit: Fit | None
    grew_most: str | None = Field(description="term that grew most from max to max + 1")
    capped_by: str | None = Field(None, description="why the search stopped below a misfit")
    longest_fitting: int | None = Field(
        None,
        description="where the peak is not monotone (chunked attention): the largest value "
        "that fits at all, above next_value; values between them fit in some chunk "
        "positions and not in others. None: no value above max_value fits",
    )
    # issue 18
    strategy: str | None = Field(
        None, description="fewest GPUs: the sharding strategy of the answer (zero, tp)"
    )


def largest(
    quantity: str, probe: Callable[[int], Fit | None], lo: int = 1, cap: int = SEARCH_CAP
) -> Limit:
    """The largest n in [lo, cap] with probe(n).fits (probe None: n invalid for the model).

    Doubling finds a bracket [good, bad), binary search closes it; monotone by assumption
    and checked at the end: probe(max) fits and probe(max + 1) does not.
    """
    first = probe(lo)
    if first is None or not first.fits:
        return Limit(
            quantity=quantity,
            max_value=None,
            max_fit=None,
            next_value=lo,
            next_fit=first,
            grew_most=None,
            capped_by=None if first else f"{quantity}={lo} is invalid for the model",
        )
    good, bad = lo, None
    while bad is None and good < cap:
        n = min(good * 2, cap)
        f = probe(n)
        if f is not None and f.fits:
            good = n
        else:
            bad = n
    if bad is None:
        return Limit(
            quantity=quantity,
            max_value=good,
            max_fit=probe(good),
            next_value=None,
            next_fit=None,
            grew_most=None,
            capped_by=f"search cap {cap}",
        )
    while bad - good > 1:
        mid = (good + bad) // 2
        f = probe(mid)
        if f is not None and f.fits:
            good = mid
        else:
            bad = mid
    max_fit, next_fit = probe(good), probe(good + 1)
    assert max_fit is not None and max_fit.fits  # monotone search invariant, not user input
    assert next_fit is None or not next_fit.fits
    return Limit(
        quantity=quantity,
        max_value=good,
        max_fit=max_fit,
        next_value=good + 1,
        next_fit=next_fit,
        grew_most=None if next_fit is None else grew_most(max_fit.terms, next_fit.terms),
        capped_by=f"{quantity}={good + 1} is invalid for the model" if next_fit is None else None,
    )


def _last(fits: Callable[[int], bool], lo: int, hi: int) -> int:
    """The largest n in [lo, hi] with fits(n), for fits true up to a point and false after
    it (lo - 1 when fits(lo) is false): doubling from lo, then binary search."""
    if not fits(lo):
        return lo - 1
    good, step, bad = lo, 1, None
    while bad is None and good < hi:
        n = min(lo + step, hi)
        good, bad = (n, None) if fits(n) else (good, n)
        step *= 2
    if bad is None:
        return good
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if fits(mid) else (good, mid)
    return good


def largest_sawtooth(
    quantity: str,
    probe: Callable[[int], Fit | None],
    period: int,
    ends: tuple[int, ...],
    cap: int = SEARCH_CAP,
) -> Limit:
    """``largest`` for a peak that is monotone only between segment ends: the values n >= 1
    with n % period in ``ends`` close a segment (chunked attention: the chunk boundaries).
    Within a segment every replayed size is a non-decreasing function of n (the chunk count
    and the cache's restart points are constant), so the peak is; across an end it may fall
    (a new, mostly padded chunk replaces a full one's copies). Assumed, and tested against
    trying every length: the segments closed by one residue grow from period to period
    (their first and last values' peaks). Answers: ``max_value`` the largest n such that
    every value up to n fits (the next does not), ``longest_fitting`` the largest n that
    fits at all (when larger)."""
    firsts = sorted({(r % period) or period for r in ends})  # segment ends in (0, period]
    periods = cap // period + 1

    def seg(t: int, p: int) -> tuple[int, int]:  # (first, last) of segment t of period p
        before = firsts[t - 1] + p * period if t else firsts[-1] + (p - 1) * period
        return max(before, 0) + 1, firsts[t] + p * period

    def fits(n: int) -> bool:
        f = probe(n) if 1 <= n <= cap else None
        return f is not None and f.fits

    top, beyond = cap, 0
    for t in range(len(firsts)):  # the segments of one residue: monotone across periods
        p = _last(lambda p, t=t: fits(min(seg(t, p)[1], cap)), 0, periods) + 1  # first misfitting
        first, last = seg(t, p)
        if first <= cap:
            top = min(top, _last(fits, first, min(last, cap)))
        q = _last(lambda p, t=t: fits(seg(t, p)[0]), 0, periods)  # last starting with a fit
        if q >= 0:
            first, last = seg(t, q)
            beyond = max(beyond, _last(fits, first, min(last, cap)))
    if top >= cap:
        return largest(quantity, probe, cap=cap)  # fits up to the cap: the capped answer
    limit = _limit(quantity, probe, top)
    return limit.model_copy(update={"longest_fitting": beyond if beyond > top + 1 else None})


def _limit(quantity: str, probe: Callable[[int], Fit | None], top: int) -> Limit:
    """The Limit of max ``top`` (0: even 1 does not fit), the next value top + 1 misfitting."""
    max_fit, next_fit = (probe(top) if top else None), probe(top + 1)
    return Limit(
        quantity=quantity,
        max_value=top or None,
        max_fit=max_fit,
        next_value=top + 1,
        next_fit=next_fit,
        grew_most=None
        if next_fit is None or max_fit is None
        else grew_most(max_fit.terms, next_fit.terms),
        capped_by=f"{quantity}={top + 1} is invalid for the model" if next_fit is None else None,
    )


def grew_most(before: dict[str, int], after: dict[str, int]) -> str | None:
    """The term with the largest increase (ties: the larger term at ``after``)."""
    deltas = {k: v - before.get(k, 0) for k, v in after.items()}
    if not deltas or max(deltas.values()) <= 0:
        return None
    return max(deltas, key=lambda k: (deltas[k], after[k]))


def _probe(
    spec: ModelSpec,
    base: Workload,
    usable: int,
    sharding: Sharding | None,
    field: str | Callable[[int], dict[str, int]],
) -> Callable[[int], Fit | None]:
    """n -> Fit of the base workload with ``field`` set to n (None when n is invalid)."""
    from estimator.estimate import estimate

    cache: dict[int, Fit | None] = {}

    def probe(n: int) -> Fit | None:
        if n not in cache:
            update = field(n) if callable(field) else {field: n}
            data = base.model_dump(exclude_unset=True) | update
            try:
                cache[n] = fit(estimate(spec, Workload.model_validate(data)), usable, sharding)
            except (SpecError, ValueError):
                cache[n] = None
        return cache[n]

    return probe


def max_batch(
    spec: ModelSpec, workload: Workload, usable: int, sharding: Sharding | None = None
) -> Limit:
    """Largest batch_size (per replica) whose peak fits ``usable`` bytes."""
    return largest("batch_size", _probe(spec, workload, usable, sharding, "batch_size"))


def max_context(
    spec: ModelSpec, workload: Workload, usable: int, sharding: Sharding | None = None
) -> Limit:
    """Longest context that fits: train/prefill seq_len (target_len of an encoder-decoder
    too); decode prompt_len with new_tokens kept (the context is prompt_len + new_tokens)."""
    if spec.is_patch_input:
        raise SpecError(
            f"max_context is invalid for {spec.name}: patch input has a fixed "
            f"length of {spec.n_positions}"
        )
    if workload.mode == "decode":
        quantity, probe = "prompt_len", _probe(spec, workload, usable, sharding, "prompt_len")
    elif spec.arch == "encoder-decoder":
        quantity = "seq_len"
        probe = _probe(spec, workload, usable, sharding, lambda n: {"seq_len": n, "target_len": n})
    else:
        quantity, probe = "seq_len", _probe(spec, workload, usable, sharding, "seq_len")
    saw = _sawtooth(spec, workload)
    limit = largest(quantity, probe) if saw is None else largest_sawtooth(quantity, probe, *saw)
    return _name_context_cap(spec, workload, limit)


def _sawtooth(spec: ModelSpec, workload: Workload) -> tuple[int, tuple[int, ...]] | None:
    """(period, segment ends mod period) where the peak is not monotone in the context:
    chunked attention (chunk count ceil(n / c); a decode's cache keeps (length - 1) % c + 1
    positions, so its segments also end where the last steps' cache restarts)."""
    from estimator.shapes import resolve

    own = resolve(spec, workload).last  # the model's own stack (decoder, else encoder)
    pattern, window = own.pattern, own.window
    if pattern != "chunked" or not window:
        return None
    if workload.mode == "decode":
        new = workload.new_tokens
        return window, (0, (1 - new) % window, (-new) % window)
    return window, (0,)


def _name_context_cap(spec: ModelSpec, workload: Workload, limit: Limit) -> Limit:
    """A search stopped by the model's context limit (estimator.spec.context_limit) says so."""
    from estimator.spec.workload import context_limit

    cap = context_limit(spec, workload)
    if cap is None or limit.next_fit is not None or limit.max_value is None:
        return limit
    used = limit.max_value + (workload.new_tokens if workload.mode == "decode" else 0)
    if used != cap:
        return limit
    how = " (rope_scaling raises it)" if spec.position == "rotary" else ""
    return limit.model_copy(update={"capped_by": f"the model's context limit, {cap:,} tokens{how}"})


def fewest_gpus(
    spec: ModelSpec,
    workload: Workload,
    usable: int,
    zero: int = 0,
    tp: int = 1,
    sp: bool = False,
    wrap: str = "blocks",
) -> Limit:
    """Fewest GPUs (a multiple of tp) whose per-GPU peak fits. Training tries every
    sharding strategy at this tp (zero 0, 1, 2, 3; ``zero`` is the user's, tried like the
    others; zero 2 and 3 with both FSDP2 wraps, the user's first) and answers the fewest
    GPUs over them (ties: the lower zero, less communication, the user's wrap), named in
    ``strategy``. Inference never shards with ZeRO (it splits
    training state): tensor parallelism only."""
    from estimator.estimate import estimate

    est = estimate(spec, workload)
    check_sharding(spec, Sharding(n_gpus=tp, tp=tp))
    zeros = (0, 1, 2, 3) if workload.is_training else (0,)
    answers = [_fewest(est, usable, z, tp, sp, wrap) for z in zeros]
    other = "torchtitan" if wrap == "blocks" else "blocks"
    if workload.is_training and _wraps(spec, other):  # FSDP2's other units, tried too
        answers += [_fewest(est, usable, z, tp, sp, other) for z in (2, 3)]
    fitting = [a for a in answers if a.max_value is not None]
    if fitting:
        return min(fitting, key=lambda a: a.max_value)
    return answers[len(zeros) - 1]  # the user's wrap, the most sharded


def _wraps(spec: ModelSpec, wrap: str) -> bool:
    """Whether FSDP2's ``wrap`` exists for ``spec`` (torchtitan's needs a token embedding,
    a final norm and an LM head: estimator/terms/ranks.py check_wrap)."""
    from estimator.spec.errors import UnsupportedError
    from estimator.spec.parallel import Parallel
    from estimator.terms.ranks import check_wrap

    try:
        check_wrap(spec, Parallel(world=2, shard="zero3", wrap=wrap))  # type: ignore[arg-type]
    except UnsupportedError:
        return False
    return True


def _fewest(est: Est, usable: int, zero: int, tp: int, sp: bool, wrap: str = "blocks") -> Limit:
    """Fewest GPUs under one strategy, searched as the largest dp that does NOT fit, so the
    answer is that + 1 replicas (memory falls as dp grows); ``wrap``: the FSDP2 units of
    zero 2 / 3."""
    wrap = wrap if zero >= 2 else "blocks"
    strategy = f"zero={zero}, tp={tp}" + (", sp" if sp and tp > 1 else "")
    strategy += f", wrap={wrap}" if wrap != "blocks" else ""
    cap = 2**20
    if zero >= 2 and est.workload.is_training:  # FSDP2 pads dim 0 to a multiple of dp:
        # past the smallest dim 0, more ranks gather more padding (not monotone)
        from estimator.terms.ranks import tensor_entries, tp_local

        cap = min(cap, *(tp_local(n, sh, tp)[0] for n, sh, _ in tensor_entries(est.spec)))

    def at(dp: int) -> Fit:
        layout = Sharding(n_gpus=dp * tp, tp=tp, zero=zero, sp=sp, wrap=wrap)  # type: ignore[arg-type]
        return fit(est, usable, layout)

    def misfit(dp: int) -> Fit | None:  # "fits" of the inverted question
        f = at(dp)
        return f.model_copy(update={"fits": not f.fits})

    if at(1).fits:
        return Limit(
            quantity="n_gpus",
            max_value=tp,
            max_fit=at(1),
            next_value=None,
            next_fit=None,
            grew_most=None,
            strategy=strategy,
        )
    if zero == 0 or not at(cap).fits:
        worst = max(at(cap).terms.items(), key=lambda kv: kv[1])[0]
        how = "raise --tp" if zero or not est.workload.is_training else "raise --zero or --tp"
        return Limit(
            quantity="n_gpus",
            max_value=None,
            max_fit=None,
            next_value=None,
            next_fit=at(cap),
            grew_most=None,
            capped_by=f"never fits with zero={zero}, tp={tp} up to {cap * tp} GPUs: "
            f"{worst} is not sharded enough ({how})",
            strategy=strategy,
        )
    worst = largest("dp", misfit, cap=cap)
    dp = (worst.max_value or 0) + 1
    return Limit(
        quantity="n_gpus",
        max_value=dp * tp,
        max_fit=at(dp),
        next_value=(dp - 1) * tp,
        next_fit=at(dp - 1),
        grew_most=grew_most(at(dp).terms, at(dp - 1).terms),
        strategy=strategy,
    )


class Plan(BaseModel):
    """All answers for one workload on one GPU type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    gpu: str
    workload: Workload
    sharding: Sharding
    fit: Fit
    max_batch: Limit
    max_context: Limit | None
    fewest_gpus: Limit


def plan(
    spec: ModelSpec,
    workload: Workload,
    usable: int,
    gpu_name: str,
    sharding: Sharding | None = None,
) -> Plan:
    """Fit + headroom, largest batch, longest context (None for patch input), fewest GPUs."""
    from estimator.estimate import estimate
    from estimator.spec.workload import resolved_defaults

    workload = resolved_defaults(spec, workload)[0]  # the model's usual settings, as estimate
    sharding = sharding or Sharding()
    check_sharding(spec, sharding)
    return Plan(
        model=spec.name,
        gpu=gpu_name,
        workload=workload,
        sharding=sharding,
        fit=fit(estimate(spec, workload), usable, sharding),
        max_batch=max_batch(spec, workload, usable, sharding),
        max_context=None if spec.is_patch_input else max_context(spec, workload, usable, sharding),
        fewest_gpus=fewest_gpus(
            spec, workload, usable, sharding.zero, sharding.tp, sharding.sp, sharding.wrap
        ),
    )
