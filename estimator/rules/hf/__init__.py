"""The Hugging Face implementation's rules (``ModelSpec.implementation == "hf"``), one module per
family: only where transformers' code saves, allocates or caches differently from our reference
model. Each rule names the code it mirrors (transformers 5.x, models/<family>/modeling_<family>.py)
and is measured against the real class (tests/tgauge/test_hf_rules_*.py, the HF matrix).

  common          every HF class: the additive float mask
  decoders        GPT-2, Llama, Mistral (fp32): saved tensors, backward, loss moment, KV cache
  decoders_pass   their no-grad forward replay (HFPass)
  bert, bart, t5, vit   the encoder and encoder-decoder families: saved tensors and replays
  autocast        the decoder families under torch.autocast
  phi3, qwen3, gpt_neox, gemma2   issue 22's classes where their code differs from Llama's
                  (registered for the class: Phi3ForCausalLM, ...; measured in
                  tests/tgauge/test_hf_rules_families.py)
A new family is a new module here, listed in estimator/rules/registry.py PROVIDERS.
"""
