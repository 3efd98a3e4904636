"""Peak live bytes of a training step's backward, by replaying autograd's backward through the
reference model (reference_model/) module by module, tensor by tensor.

Convention of the live tracker (profiler/live.py), as in estimator/rules/live.py: every tensor a
backward op returns is counted when it is returned; a saved tensor is freed when the last
autograd node holding it has run; a gradient is freed once its consumer node has run (autograd
drops its input buffer), unless the residual stream still holds it. The walk starts at the
loss with every activation live (``start``) and visits the head, then each stack (last first):
final norm, layers (last first), embeddings. Each module kind has one rule (``backward.*``,
estimator/rules/reference/backward.py, naming the torch backward it mirrors), bound once per
walk; the saved set of a module (estimator/terms/activations.py) is freed by its rule, so the
saved bytes freed add up to the activation terms exactly (tests/estimator/replay/test_backward.py).

Transients modelled (sizes: n = b s tokens, R = [n, d], A = [n, h d_h], KV = [n, h_kv d_h],
F = [n, d_ff], P = [b, h, s, s_k] scores, all in the compute dtype):
  loss        nll_loss_backward's d(log-probs) and log_softmax_backward's d(logits) [n, V]
  mlm head    BERT's head_transform: its norm, gelu_backward (+R), dense, after the lm_head
  linear      AddmmBackward0 / MmBackward0: grad input and dW (db) while the grad output lives
  layernorm   native_layer_norm_backward: grad input [n, d] (+ dw, db); rmsnorm (written out):
              MulBackward0 x2, RsqrtBackward0, MeanBackward1, PowBackward0: up to 3 R at once
  residual    pre-norm x + F(Norm(x)): the branch's grad is summed into the residual's (+R)
  ffn         down, act (gelu/relu backward: +F), up; gated: the product's two [n, d_ff] grads
  eager attn  BmmBackward0 of probs @ V: grad V and grad probs (P); SoftmaxBackward0 (+P);
              MaskedFillBackward0 (+P); MulBackward0 of the scale (+P); BmmBackward0 of
              Q K^T: grad Q, grad K; repeat_kv's ExpandBackward0 sums; head views' clones
  fused attn  ScaledDotProductFlashAttentionForCpuBackward0: dq, dk, dv at once
  chunked     as eager on the [b, n_c, h, c, c] blocks, plus the block-layout clones and
              ConstantPadNdBackward0's copies of q, k, v grads (fused: math sdpa's saved v
              block copy is freed with probs @ v's BmmBackward0)
  rotary      MulBackward0 x2, NegBackward0, SplitBackward0 (cat + add) on q and k grads
  relative    AddBackward0's sum of the bias grad over the batch [1, h, s, s_k]
  dropout     MulBackward0: grad * mask (+R, or +P for attention probabilities)
  embeddings  learned positions: the grad summed over the batch [s, d]; the shared token
              embedding: embedding_dense_backward's [V, d] waits in autograd's input buffer
              for its other uses (tied LM head, the other stack), then their sum
  checkpoint  a layer's saved set is recomputed (all of it live) when backward reaches it;
              the recompute's own forward temporaries are not modelled
  autocast    the branch grads in the low dtype (+ a low copy of the stream's grad per
              sublayer); each linear's dW and grad input low, then ToCopyBackward0 to fp32
              (rule backward.linear@autocast); the loss head in fp32, then d(logits)'s low copy
Not modelled: T5's relative bias grad accumulation across layers, the pooler's [b, d] grads,
ViT's patch and class-token grads, kernel scratch. Measured against profiler.live on CPU:
docs/validation.md.
"""

from __future__ import annotations

import functools
from typing import Any

from estimator.rules.live import ACTS, D_LOGITS, D_LOGPROBS, GRADS, Live
from estimator.rules.registry import rule
from estimator.shapes import Shapes, for_layer_kind
from estimator.spec.dtypes import INDEX_BYTES
from estimator.spec.model import ModelSpec
from estimator.terms.activations import frozen_layers, layer_saved

Terms = dict[str, Any]
FP32_BYTES = 4
#: the steps a walk binds: attribute -> rule kind (estimator/rules/reference/backward.py)
STEPS = {
    "linear": "backward.linear",
    "norm": "backward.norm",
    "ffn": "backward.ffn",
    "ffn_act": "backward.ffn.act",
    "residual": "backward.residual",
    "dropout": "backward.dropout",
    "rotary": "backward.rotary",
    "qk_norm": "backward.qk_norm",  # issue 22d
    "final_softcap": "backward.final_softcap",  # issue 22d
    "own_layer": "backward.layer",  # issue 22d: a class's own layer walk
    "core_flash": "backward.core.flash",
    "core_eager": "backward.core.eager",
    "latent_attention": "backward.latent_attention",  # issue 22l: reference_model/mla.py
}


class Backward:
    """One backward walk: ``saved`` activation terms and ``grads`` parameter-gradient bytes,
    both by full term name; ``embed_grad`` the shared token embedding's gradient bytes."""

    def __init__(
        self, spec: ModelSpec, sh: Shapes, live: Live, saved: Terms, grads: Terms, gathers=None
    ) -> None:
        self.spec, self.sh, self.live = spec, sh, live
        self.gathers = gathers  # FSDP2's gathers per layer (estimator/terms/ranks.py)
        for attr, kind in STEPS.items():  # the steps of this spec's code, bound to the walk
            setattr(self, attr, functools.partial(rule(kind, spec, sh), self))
        self.saved, self.grads = dict(saved), dict(grads)
        self.embed_grad = self.grads.pop("embed", 0)
        self.embed_uses = 0
        self.cb = sh.cb  # the residual stream, norms, loss
        # what matmuls make (q, k, v, scores, FFN inner) and their grads: the autocast dtype
        self.ib = sh.ib
        self.b = sh.b
        self.share = 1  # a per-layer term is L layers' bytes: one layer frees 1/L
        self.freed: Terms = {}
        self.memory_grad = 0  # encoder-decoder: the encoder output's grad buffer
        self.release = 0  # a dropout's grad, freed once the branch's first linear has run
        self.sublayers = 2  # residual dropout masks per layer (3 with cross-attention)
        self.pending = 0  # a grad already in the attention input's buffer (parallel block)
        # issue 22e: the layer walked is a mixture of experts (rule backward.layer_kinds),
        # and the per-layer terms only some layers have, with their layer count
        self.moe = False
        self.shares: dict[str, int] = {}
        self.latent = rule("attention.latent", spec)(spec)  # issue 22l: latent attention
        self.kept_grad = 0  # issue 20c: the layer output's grad a reentrant checkpoint keeps
        self.held_grad = 0  # ... once the first sublayer's backward has summed it

    # ---- bookkeeping -----------------------------------------------------------------------
    def free(self, name: str, part: int | None = None) -> None:
        """Free ``part`` bytes of ``name``'s saved set (default: what is left of it)."""
        whole = self.saved.get(name, 0) // self.shares.get(name, self.share)
        done = self.freed.get(name, 0)
        n = whole - done if part is None else min(part, whole - done)
        self.freed[name] = done + n
        self.live.drop(n, label=ACTS)

    def grad(self, name: str) -> None:
        """A module's parameter gradients appear (AccumulateGrad keeps them)."""
        self.live.take(self.grads.get(name, 0) // self.shares.get(name, self.share), label=GRADS)

    # ---- attention: o_proj, the core (flash or eager), positions, projections -------------
    def attention(self, p: str, s: Any, s_k: Any, g: Any, cross: bool) -> Any:
        """Attention.forward's backward given its output's grad ``g`` (held by the residual):
        o_proj, the attention core (flash or eager), rotary, q/k/v projections -> the grad
        of its input (cross-attention: k_proj's and v_proj's go to the encoder output's)."""
        if self.latent and not cross:  # issue 22l: rules/reference/mla.py
            return self.latent_attention(p, s)
        a = self.b * s * self.spec.n_heads * self.spec.head_dim * self.ib  # o_proj input
        d_o = self.linear(f"{p}.o_proj", a)
        flash = self.sh.attention_impl == "fused" and not self.chunked_at(p, cross, s)
        flash = flash and rule("backward.flash", self.spec)(self.spec, self.sh, cross)
        core = self.core_flash if flash else self.core_eager
        if self.sh.checkpointing == "selective" and not flash:  # the core's set, recomputed
            held = self._recompute_core(p, s, s_k, cross)
            dq, dk, dv = core(p, s, s_k, d_o, cross)
            self.free(p, held)  # the checkpoint's inputs q, k, v
        else:
            dq, dk, dv = core(p, s, s_k, d_o, cross)
        if not cross:
            self.positions(p, s, dq, dk)
            dq, dk = self.qk_norm(p, s, s_k, dq, dk)  # issue 22d: q_norm / k_norm (Qwen3)
        return self.projections(p, s, s_k, dq, dk, dv, not flash, cross)

    def _recompute_core(self, p: str, s: Any, s_k: Any, cross: bool) -> Any:
        """Selective recomputation (Korthikanti et al. 2022 sec. 5; non-reentrant
        torch.utils.checkpoint around the eager core): on the first unpack the core's forward
        runs again and its full saved set (scores, mask, softmax, dropout, V) is live beside
        the checkpoint's inputs q, k, v, which are freed when the core's backward is done.
        Registers the full set for this walk; -> the checkpoint's held bytes."""
        import dataclasses

        from estimator.terms.activations import attention_saved, scores_entries

        stack = p.split(".")[0]
        full_sh = dataclasses.replace(self.sh, checkpointing="none")
        entries = s * s_k if cross else scores_entries(self.sh, stack, s)
        masked = not cross and self.sh.stack(stack).pattern != "full"
        full = attention_saved(self.spec, full_sh, self.b, s, s_k, entries, masked, cross=cross)
        for k in ("scores", "scores.dropout", "mix"):
            name = f"{p}.{k}"
            self.saved[name] = full.get(k, 0) * self.share
            self.freed.pop(name, None)
            self.live.take(full.get(k, 0), label=ACTS)
        spec = self.spec
        q, kv = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
        return (self.b * s * q + 2 * self.b * s_k * kv) * self.ib  # q, k, v

    def chunked_at(self, p: str, cross: bool, s: Any) -> bool:
        """Whether the attention ``p`` runs Attention.chunked (self-attention, s > 1)."""
        pattern = self.sh.stack(p.split(".")[0]).pattern
        return not cross and pattern == "chunked" and s > 1

    def positions(self, p: str, s: Any, dq: Any, dk: Any) -> None:
        """Rotary backward of k then q; the rotary tables / bucket ids (self_attn) freed."""
        if self.spec.position == "rotary":
            self.rotary(dk)
            self.rotary(dq)
        self.free(p)

    def projections(
        self, p: str, s: int, s_k: int, dq: int, dk: int, dv: int, clones: bool, cross: bool
    ) -> int:
        """ViewBackward0 clones (eager: the heads of q and v, and of k under GQA) and the q, k, v
        projections' backward; the grads of their common input are summed as they arrive.
        -> the grad of the attention's input (cross: of the decoder stream; the k, v grads go
        to the encoder output's buffer)."""
        live, cb, d = self.live, self.cb, self.spec.d_model
        nd, nd_k = self.b * s * d * cb, self.b * s_k * d * cb
        gqa = self.spec.n_kv_heads < self.spec.n_heads

        def proj(name: str, grad: int, out: int, clone: bool) -> None:
            if clone:
                live.take(grad)
                live.drop(grad)
            # cross k_proj's saved input, the encoder output, is freed after the last layer
            free = not (cross and name.endswith("k_proj"))
            self.linear(name, out, free=free, g=grad, stream=True)

        proj(f"{p}.k_proj", dk, nd_k, clones and gqa)
        if self.pending:  # a parallel block's FFN grad (one_norm) waits: k's is summed in
            self.residual(self.b * s)
        proj(f"{p}.v_proj", dv, nd_k, clones)
        live.take(nd_k)  # k's and v's input grads summed
        live.drop(nd_k, nd_k)
        if cross:  # into the encoder output's grad buffer
            if self.memory_grad:
                self.residual(self.b * s_k)
            else:
                self.memory_grad = nd_k
        proj(f"{p}.q_proj", dq, nd, clones)
        if not cross:
            self.residual(self.b * s)  # q's input grad summed with k's and v's
        return nd

    def sublayer(self, p: str, norm: str, n: int, branch) -> None:
        """Pre-norm x + Drop(F(Norm(x))) or post-norm Norm(x + Drop(F(x))); the residual's
        grad (R) is live before and after."""
        nd = n * self.spec.d_model * self.cb
        drop = self.sh.dropout > 0
        part = self.saved.get(f"{p}.dropout", 0) // self.share // self.sublayers

        def into_branch(g: int) -> int:
            """The residual's grad ``g`` through the branch's dropout mask and, under
            autocast, AddBackward0's cast to the branch's low dtype -> the branch's grad."""
            if drop:
                g = self.release = self.dropout(f"{p}.dropout", n * self.spec.d_model, part)
            if self.sh.autocast:
                g = self.release = self.live.take(n * self.spec.d_model * self.ib)
            return branch(g)

        if self.spec.norm_position == "pre":
            d_in = into_branch(nd)
            d_norm = self.norm(f"{p}.{norm}", d_in, n)
            self.live.take(nd)  # summed into the residual's grad
            # issue 20c: under a reentrant checkpoint the old one (the layer output's grad,
            # CheckpointFunction.backward's ``args``) stays until the layer's backward ends
            kept, self.kept_grad = self.kept_grad, 0
            self.live.drop(d_norm, 0 if kept else nd)
            self.held_grad = kept
            return
        d_norm = self.norm(f"{p}.{norm}", nd, n)  # frees the residual's grad
        d_in = into_branch(d_norm)
        self.live.take(nd)
        self.live.drop(d_in, d_norm)

    def layer(self, stack: str, s: int, s_src: int) -> None:
        """Layer.forward's backward: FFN, cross-attention, self-attention (reverse order)."""
        p, n = f"{stack}.layers", self.b * s
        self.sublayers = 3 if s_src else 2
        out = 0
        if self.sh.checkpointing == "full":  # the layer's saved set is recomputed
            self.live.take(self._recomputed(stack, s, s_src), label=ACTS)
            # issue 20c: the reentrant recompute's output (rules/hf/checkpoint.py)
            out = self.live.take(rule("live.checkpoint_output", self.spec)(self.spec, self.sh, n))
            self.kept_grad, self.held_grad = out, 0  # reentrant: its grad kept too (sublayer)
        if not s_src and self.own_layer(p, n, s):  # issue 22d: GPT-NeoX, Gemma 2
            return
        if self.spec.parallel_block != "none":
            self.parallel_layer(p, s, n)
        else:
            self.sublayer(p, "ffn_norm", n, lambda g: self.ffn(p, n))
        if s_src:
            attn = lambda g: self.attention(f"{p}.cross_attn", s, s_src, g, True)  # noqa: E731
            self.sublayer(p, "cross_norm", n, attn)
        if self.spec.parallel_block == "none":
            attn = lambda g: self.attention(f"{p}.self_attn", s, s, g, False)  # noqa: E731
            self.sublayer(p, "attn_norm", n, attn)
        if self.sh.checkpointing == "full":
            self.free(stack)  # the checkpointed layer input
            self.live.drop(out, self.held_grad)
            self.kept_grad = self.held_grad = 0

    def parallel_layer(self, p: str, s: int, n: int) -> None:
        """Layer.parallel_forward's backward, x + Drop(Attn(Norm1(x))) + Drop(FFN(Norm2(x)))
        (autograd runs the nodes made last first): AddBackward0 of (x + a) + m, then of x + a
        (autocast: each casts the residual's grad to its branch's low dtype, both copies
        live); the FFN branch (its dropout's MulBackward0), ffn_norm and its grad summed into
        x's; the attention branch, attn_norm, summed into x's. 'one_norm': the FFN's input
        grad waits in attn_norm's output buffer, where q/k/v's input grads are summed as they
        arrive. The residual's grad (R) is live before and after."""
        live, d = self.live, self.spec.d_model
        nd, low = n * d * self.cb, n * d * self.ib
        drop, autocast = self.sh.dropout > 0, bool(self.sh.autocast)
        one = self.spec.parallel_block == "one_norm"
        part = self.saved.get(f"{p}.dropout", 0) // self.share // self.sublayers
        m_low = live.take(low) if autocast else 0
        a_low = live.take(low) if autocast else 0
        if drop:
            self.release = self.dropout(f"{p}.dropout", n * d, part)
        else:
            self.release = m_low
        d_h = self.ffn(p, n)  # the grad of the FFN's input
        if not one:
            d_n2 = self.norm(f"{p}.ffn_norm", d_h, n)
            live.take(nd)  # summed into x's grad; the old one goes unless a still reads it
            live.drop(d_n2, nd if autocast else 0)
        # the attention branch: its grad is the residual's old grad (no dropout, no autocast;
        # freed after o_proj's backward unless x's buffer still holds it: one_norm), its
        # dropout's MulBackward0 of that grad, or AddBackward0's low copy
        old = 0 if one or autocast else nd
        if drop:
            self.release = self.dropout(f"{p}.dropout", n * d, part)
            live.drop(old)
        else:
            self.release = a_low + old
        self.pending = d_h if one else 0
        d_in = self.attention(f"{p}.self_attn", s, s, nd, False)
        self.pending = 0
        d_n1 = self.norm(f"{p}.attn_norm", d_in, n)
        live.take(nd)  # summed into x's grad
        live.drop(d_n1, nd)

    def checkpoint_held(self, stack: str) -> Any:
        """What the checkpointed layers' closures keep from the forward to the end of the
        decoder stack's layers (issue 20c, rule ``live.checkpoint_held``, rules/hf/
        checkpoint.py): decoder-only models under full checkpointing, else 0."""
        if self.sh.checkpointing != "full" or stack != "decoder" or self.spec.arch != "decoder":
            return 0
        return rule("live.checkpoint_held", self.spec)(self.spec, self.sh)

    def _recomputed(self, stack: str, s: int, s_src: int) -> int:
        """Bytes of one layer's saved set, recomputed by the checkpoint (non-reentrant
        torch.utils.checkpoint, on the first unpack): the full set of
        estimator/terms/activations.py (without checkpointing), registered for this walk."""
        full = layer_saved(self.spec, self.sh, stack, s, s_src, self.moe)  # issue 22e: MoE
        if self.sh.finetune.lora:  # issue 20: a frozen base's set (layers after the first)
            full = dict(frozen_layers(self.spec, self.sh, stack, s, s_src)[0])
            # its highest wrapped linear, while the recompute runs (rules/reference/finetune.py)
            top = rule("live.lora_recompute", self.spec)(self.spec, self.sh, full)
            self.live.take(top)
            self.live.drop(top)
        # the layer's input is the checkpoint's own (kept): the first module saving it, the
        # pre-norm attn_norm or the post-norm q_proj, gets that storage back, not a new one
        first = "attn_norm" if self.spec.norm_position == "pre" else "self_attn.q_proj"
        # issue 20c: unless that module saves a copy (HF LlamaRMSNorm's fp32 one in 16-bit)
        if first != "attn_norm" or rule("saved.norm_saves_input", self.spec)(self.spec, self.sh):
            full[first] -= self.b * s * self.spec.d_model * self.cb
        for k, v in full.items():
            key = f"{stack}.layers.{k}"
            self.saved[key] = v * self.shares.get(key, self.share)
            self.freed.pop(key, None)
        return sum(full.values())

    def stack(self, stack: str, n_layers: int, s: int, s_src: int) -> None:
        """Final norm, layers (last first; layers 3.. change the live bytes like layer 2),
        embedding extras. The residual's grad [b, s, d] is live before and after."""
        nd = self.b * s * self.spec.d_model * self.cb
        if self.spec.final_norm:
            self.norm(f"{stack}.final_norm", nd, self.b * s)
        if self.gathers is not None:  # torchtitan: the final norm + head unit's post_backward
            self.gathers.head_post_backward(self.live)
        self.share = n_layers
        kinds = rule("backward.layer_kinds", self.spec)(self.spec, stack, n_layers)
        if kinds is not None:  # issue 22e: runs of MoE and dense layers, last first
            self.shares = kinds[1]
            for moe, m in kinds[0]:
                self.moe = moe
                for _ in range(min(m, 2)):
                    top, delta = self.live.measure(lambda: self.layer(stack, s, s_src))
                    self._next_layer(stack)
                self.live.repeat(m - 2, top, delta)
            self.moe, self.shares = False, {}
        # under FSDP2 the first layer (walked last) prefetches no layer (torchtitan untied
        # zero3: the embedding's unit): walked on its own
        alone = self.gathers is not None and n_layers > 2
        # issue 22p: a per-layer pattern's layers, one by one (kind_layers)
        pattern = self.spec.layer_pattern if stack == "decoder" and kinds is None else None
        alike = kinds is None and pattern is None
        for i in range(min(n_layers, 2) if alike else 0):
            top, delta = self.live.measure(
                lambda i=i: self.fsdp_layer(stack, s, s_src, prefetch=i < n_layers - 1)
            )
            self._next_layer(stack)
        if n_layers > 2 and alike:
            self.live.repeat(n_layers - 2 - alone, top, delta)
        if pattern is not None:
            self.kind_layers(stack, s, s_src, pattern)
        elif alone and kinds is None:
            self.fsdp_layer(stack, s, s_src, prefetch=False)
            self._next_layer(stack)
        if self.gathers is not None:
            self.gathers.after_stack(self.live, stack)
        self.live.drop(self.checkpoint_held(stack))  # issue 20c: with the first layer's node
        self.share = 1
        if s_src and self.sh.checkpointing != "full":  # the encoder output (first layer's)
            self.free(f"{stack}.layers.cross_attn.k_proj")
        self.extras(stack, s)

    def kind_layers(self, stack: str, s: int, s_src: int, kinds: tuple[str, ...]) -> None:
        """The layers of a per-layer pattern (``spec.layer_pattern``, issue 22p), last first,
        each walked as its kind runs (estimator/shapes.py ``for_layer_kind``) with its own
        saved set (a sliding layer's fused sdpa saves its additive mask, a full one's none)."""
        run, prefix = self.sh, f"{stack}.layers."
        for i in reversed(range(len(kinds))):
            self.sh = for_layer_kind(run, kinds[i])
            for k in [k for k in self.saved if k.startswith(prefix)]:
                self.saved[k] = 0  # the other kind's set (checkpointing: _recomputed's)
            if self.sh.checkpointing != "full":
                for k, v in layer_saved(self.spec, self.sh, stack, s, s_src).items():
                    self.saved[prefix + k] = v * self.share
            self.fsdp_layer(stack, s, s_src, prefetch=i > 0)
            self._next_layer(stack)
        self.sh = run

    def _next_layer(self, stack: str) -> None:
        self.freed = {  # the next layer frees its own share
            k: v for k, v in self.freed.items() if k != stack and ".layers." not in k
        }

    def fsdp_layer(self, stack: str, s: int, s_src: int, prefetch: bool = True) -> None:
        """One layer's backward, between FSDP2's pre_backward and post_backward when a
        rank's layers are sharded (estimator/terms/ranks.py Gathers); ``prefetch``: its
        pre_backward prefetches the layer before it (not the stack's first layer)."""
        if self.gathers is not None:
            self.gathers.pre_layer(self.live, stack, prefetch)
        self.layer(stack, s, s_src)
        if self.gathers is not None:
            self.gathers.post_layer(self.live, stack)

    def extras(self, stack: str, s: int) -> None:
        """Embedding dropout, embedding norm, token types, positions, patches, then the
        token embedding (its grad waits for the embedding's other uses)."""
        spec, live, n = self.spec, self.live, self.b * s
        nd = n * spec.d_model * self.cb
        if self.sh.dropout > 0:
            self.dropout(f"{stack}.dropout", n * spec.d_model)
            live.drop(nd)
        if spec.embed_norm:
            self.norm(f"{stack}.embed_norm", nd, n)
        self.grad(f"{stack}.token_type")
        self.free(f"{stack}.token_type")
        if spec.position == "learned":  # x + pos: the grad summed over the batch [s, d]
            tmp = live.take(s * spec.d_model * self.cb)
            self.grad(f"{stack}.pos")
            live.drop(tmp)
        else:
            self.grad(f"{stack}.pos")
        self.free(f"{stack}.pos")
        self.grad(f"{stack}.patch.proj")
        self.grad(f"{stack}.patch")
        self.free(f"{stack}.patch.proj")
        self.free(f"{stack}.patch")
        if spec.embed_scale:  # MulBackward0 of embed * sqrt(d): grad * scale (+R)
            live.take(nd)
            live.drop(nd)
        if not spec.is_patch_input:
            self.embed_use()
            self.free("embed", n * INDEX_BYTES)  # this stack's token ids
        live.drop(nd)  # the stream's grad

    def classifier(self) -> int:
        """Cross-entropy over [b, n_labels] (nll, log-softmax backward), then the classifier's
        dW, db and grad input [b, d] (dropout before it: its mask freed). -> that grad."""
        live, bl = self.live, self.b * self.spec.n_labels * self.cb
        live.take(bl)  # nll_loss_backward: d(log-probs)
        self.free("loss", self.b * INDEX_BYTES + self.cb)  # targets, total_weight
        live.take(bl)  # log_softmax_backward: d(logits)
        live.drop(bl)
        self.free("loss")
        g = self.linear("classifier", self.b * self.spec.d_model * self.cb)
        live.drop(bl)
        self.free("classifier.dropout")
        return g

    def embed_use(self) -> None:
        """embedding_dense_backward: a new [V, d]; after the first use it is summed with the
        buffer (a third [V, d]) and the buffer keeps the sum."""
        if not self.embed_grad:
            return
        self.embed_uses += 1
        self.live.take(self.embed_grad, label=GRADS if self.embed_uses == 1 else None)
        if self.embed_uses > 1:
            self.live.take(self.embed_grad)
            self.live.drop(self.embed_grad, self.embed_grad)

    def head(self, s_out: int) -> None:
        """Loss, LM head (or pooler): leaves the last stack's output grad [b, s, d] live."""
        spec, live, cb, n = self.spec, self.live, self.cb, self.b * s_out
        nd = n * spec.d_model * cb
        if spec.lm_head and self.sh.autocast:
            self.autocast_head(n)
            return
        if spec.lm_head:
            logits = n * spec.vocab_size * cb
            # the loss's fp32 [n, V] grads: the logits' own dtype, or fp32 where the class
            # casts the logits first (rule "loss.upcast"); ToCopyBackward0 then makes d(logits)
            l32 = n * spec.vocab_size * FP32_BYTES
            upcast = cb != FP32_BYTES and rule("loss.upcast", spec)(spec)
            lg = l32 if upcast else logits
            live.take(lg, label=D_LOGPROBS)  # nll_loss_backward: d(log-probs)
            self.free("loss", n * INDEX_BYTES + (FP32_BYTES if upcast else cb))  # targets, weight
            live.take(lg, label=D_LOGITS)  # log_softmax_backward: d(logits)
            live.drop(lg, label=D_LOGPROBS)
            self.free("loss", lg)  # the log-softmax
            if upcast:
                live.take(logits, label=D_LOGITS)  # ToCopyBackward0: d(logits) in their dtype
                live.drop(l32, label=D_LOGITS)
            self.final_softcap(logits)  # issue 22d: Gemma 2's; frees the rest of "loss"
            if self.gathers is not None:  # torchtitan: the head unit's pre_backward
                self.gathers.head_pre_backward(live)
            if spec.tie_embeddings:  # the tied weight's grad waits for the embedding's
                self.embed_use()
            else:
                self.grad("lm_head")
            live.take(nd)
            live.drop(logits, label=D_LOGITS)
            self.free("lm_head")
            if spec.head_transform:  # BERT's MLM head: norm, gelu_backward (+R), dense
                g = self.norm("head_transform.norm", nd, n)
                self.ffn_act("head_transform.act", nd, g)  # the activation's own backward
                self.linear("head_transform.dense", nd)
                live.drop(nd)
            return
        bd = self.b * spec.d_model * cb
        self.free("loss")  # a base model's stand-in objective: its fp32 copy, if any
        g = self.classifier() if spec.n_labels else 0  # the grad of its input [b, d]
        if spec.n_labels and not spec.pooler:  # select_backward of x[:, 0]: zeros [b, s, d]
            live.take(nd)
            live.drop(g)
            return
        if spec.pooler:  # tanh, proj on x[:, 0], then select_backward: zeros [b, s, d]
            live.take(bd)
            live.drop(g)
            self.free("pooler.act")
            self.linear("pooler.proj", bd)
            live.drop(bd)
            live.take(nd)
            live.drop(bd)
            return
        live.take(nd)

    def autocast_head(self, n: int) -> None:
        """Loss and LM head under autocast: nll_loss_backward and log_softmax_backward in
        fp32 (cross_entropy_loss is on autocast's fp32 list), ToCopyBackward0 to the low
        logits, then the lm_head's linear (its weight's grad: the tied embedding's)."""
        spec, live, cb, ib = self.spec, self.live, self.cb, self.ib
        logits, low = n * spec.vocab_size * cb, n * spec.vocab_size * ib
        live.take(logits, label=D_LOGPROBS)  # nll_loss_backward: d(log-probs)
        self.free("loss", n * INDEX_BYTES + cb)  # targets, total_weight
        live.take(logits, label=D_LOGITS)  # log_softmax_backward: d(logits) fp32
        live.drop(logits, label=D_LOGPROBS)  # d(log-probs)
        self.free("loss")  # the log-softmax
        live.take(low)  # ToCopyBackward0: d(logits) in the logits' low dtype
        live.drop(logits, label=D_LOGITS)
        if self.gathers is not None:  # torchtitan: the head unit's pre_backward
            self.gathers.head_pre_backward(live)
        tied = spec.tie_embeddings
        w32 = self.embed_grad if tied else self.grads.get("lm_head", 0)
        nd = n * spec.d_model * cb
        if tied:
            self.linear("lm_head", nd, g=low, stream=True, grad=self.embed_use, w32=w32)
        else:
            self.linear("lm_head", nd, g=low, stream=True)


def backward_peak(
    spec: ModelSpec, sh: Shapes, saved: Terms, grads: Terms, start: Any, gathers=None
) -> Any:
    """Highest live bytes of the backward walk from ``start`` (every activation live):
    ``saved`` activation terms and ``grads`` parameter-gradient bytes, by term name;
    ``gathers``: one rank's FSDP2 units (estimator/terms/ranks.py), None unsharded."""
    return backward_walk(spec, sh, saved, grads, start, gathers).peak


def backward_walk(
    spec: ModelSpec,
    sh: Shapes,
    saved: Terms,
    grads: Terms,
    start: Any,
    gathers=None,
    named: dict[str, int] | None = None,
) -> Live:
    """The walk's live bytes: ``now`` at its end (every saved tensor freed, every parameter
    gradient kept) and ``peak``; ``named``: the labelled bytes of ``start``, to name the
    peak's parts (``Live.at_peak``)."""
    live = Live(start, named)
    bw = Backward(spec, sh, live, saved, grads, gathers)
    live.take(bw.checkpoint_held("decoder"))  # issue 20c: kept since the forward
    s, s_dec = sh.s, sh.s_dec
    bw.head(sh.s_out)
    for stack, n_layers in reversed(spec.stacks):
        s_stack = s_dec if stack == "decoder" and spec.arch == "encoder-decoder" else s
        s_src = s if stack == "decoder" and spec.arch == "encoder-decoder" else 0
        if stack == "encoder" and spec.arch == "encoder-decoder":  # the memory's grad
            bw.memory_grad = 0  # becomes the encoder stream's grad
        bw.stack(stack, n_layers, s_stack, s_src)
    if gathers is not None:
        gathers.end(live)
    return live
