"""Capacity planning: inverse questions answered by exact integer search on the estimator.

Does it fit (and with what headroom)? Largest batch? Longest context? Fewest GPUs? Every
answer is an exact integer found by doubling then binary search on a quantity whose peak
memory grows monotonically with it, and is verified: the maximum fits, maximum + 1 does not.
Each answer names the first size that does not fit and the memory term that grew most.
Chunked attention's peak is not monotone in the context (it falls at chunk boundaries):
``largest_sawtooth`` searches it segment by segment; the answer is still the largest n such
that every n' <= n fits, and ``Limit.longest_fitting`` adds the largest n that fits at all.

Sharding (per GPU, n_gpus = dp * tp; ``batch_size`` is the micro-batch of one replica):
- ZeRO stage 1 divides ``optimizer.*`` by dp; stage 2 also ``gradients``; stage 3 (= FSDP)
  also ``weights``, plus one gathered layer of full weights (``sharding.gathered_layer``:
  weights of the largest per-layer share, weights / L) held while a layer runs.
  (Rajbhandari et al. 2020, ZeRO, Fig. 1.)
- Tensor parallelism (Megatron-LM, Shoeybi et al. 2019) divides by tp the share of weights,
  gradients and optimizer states that belongs to the layers (by parameter count, exact), every
  per-layer activation term (assumes sequence parallelism, Korthikanti et al. 2022, so the
  norm and dropout activations are split too) and the KV cache. Replicated on every rank:
  embeddings, positions, final norm, lm_head / pooler parameters and their activations
  (logits, loss) — Megatron's vocab-parallel lm_head is not modelled.
Communication buffers and time are not modelled.
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

    @property
    def dp(self) -> int:
        return self.n_gpus // self.tp


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


def sharded_terms(est: Est, sharding: Sharding) -> dict[str, int]:
    """Per-GPU memory terms of ``est`` under ``sharding`` (ceil division, exact ints)."""
    tp, dp, zero = sharding.tp, sharding.dp, sharding.zero
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
        if (name.startswith("optimizer.") and zero >= 1) or (name == "gradients" and zero >= 2):
            value = -(-value // dp)
        if weights and zero >= 3:
            full = value
            value = -(-full // dp)
            if dp > 1:
                gathered = -(-full // max(est.spec.n_layers, 1))
                out["sharding.gathered_layer"] = out.get("sharding.gathered_layer", 0) + gathered
        out[name] = value
    return out


def peak_bytes(est: Est, sharding: Sharding | None = None) -> tuple[int, str]:
    """Per-GPU (peak bytes, phase): the estimator's own peak timeline (estimator.replay.peak)
    re-evaluated on the sharded terms, plus a gathered ZeRO-3 layer. Under tp the decode
    phase's longest cache is divided by tp too. Unsharded: exactly the Estimate's peak."""
    if sharding is None or (sharding.tp == 1 and (sharding.zero == 0 or sharding.dp == 1)):
        return est.peak_memory_bytes, est.peak_phase
    from estimator.replay.peak import peak_memory
    from estimator.shapes import resolve
    from estimator.terms.kv_cache import kv_cache_max_bytes

    terms = sharded_terms(est, sharding)
    gathered = terms.pop("sharding.gathered_layer", 0)
    spec, wl = est.spec, est.workload
    sh = resolve(spec, wl)
    peak, phase = peak_memory(spec, sh, terms)
    if phase == "decode" and wl.kv_cache and sharding.tp > 1:
        kv_max = kv_cache_max_bytes(spec, sh)
        peak -= kv_max - -(-kv_max // sharding.tp)
    return peak + gathered, phase


class Fit(BaseModel):
    """Does one workload fit? Peak per GPU vs the usable budget, with the terms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fits: bool
    peak_bytes: int
    usable_bytes: int
    headroom_bytes: int = Field(description="usable - peak; negative when it does not fit")
    peak_phase: str
    terms: dict[str, int]


def fit(est: Est, usable: int, sharding: Sharding | None = None) -> Fit:
    peak, phase = peak_bytes(est, sharding)
    terms = sharded_terms(est, sharding) if sharding else dict(est.memory.terms)
    return Fit(
        fits=peak <= usable,
        peak_bytes=peak,
        usable_bytes=usable,
        headroom_bytes=usable - peak,
        peak_phase=phase,
        terms=terms,
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
    spec: ModelSpec, workload: Workload, usable: int, zero: int = 0, tp: int = 1
) -> Limit:
    """Fewest GPUs (a multiple of tp) whose per-GPU peak fits. Searched as the largest dp
    that does NOT fit, so the answer is that + 1 replicas (memory falls as dp grows)."""
    from estimator.estimate import estimate

    est = estimate(spec, workload)
    check_sharding(spec, Sharding(n_gpus=tp, tp=tp, zero=zero))  # type: ignore[arg-type]

    def at(dp: int) -> Fit:
        return fit(est, usable, Sharding(n_gpus=dp * tp, tp=tp, zero=zero))  # type: ignore[arg-type]

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
        )
    if zero == 0 or not at(2**20).fits:
        worst = max(at(2**20).terms.items(), key=lambda kv: kv[1])[0]
        return Limit(
            quantity="n_gpus",
            max_value=None,
            max_fit=None,
            next_value=None,
            next_fit=at(2**20),
            grew_most=None,
            capped_by=f"never fits with zero={zero}, tp={tp}: {worst} is not sharded "
            "enough (raise --zero or --tp)",
        )
    worst = largest("dp", misfit, cap=2**20)
    dp = (worst.max_value or 0) + 1
    return Limit(
        quantity="n_gpus",
        max_value=dp * tp,
        max_fit=at(dp),
        next_value=(dp - 1) * tp,
        next_fit=at(dp - 1),
        grew_most=grew_most(at(dp).terms, at(dp - 1).terms),
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
        fewest_gpus=fewest_gpus(spec, workload, usable, sharding.zero, sharding.tp),
    )
