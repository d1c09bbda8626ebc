"""The ``gpu`` engine: a gpt-fast-style Llama/Qwen2 forward on a slotted static KV cache.

Modules, one concept each:

* ``model``: the forward (RMSNorm, RoPE, GQA attention, SwiGLU) and ``from_hf``;
* ``runner``: KV cache, per-slot sampling state, decode as CUDA graphs per bucket;
* ``sampling``: temperature, top-p, repetition penalty, counter-based seeded noise;
* ``slots``: which slot holds which sequence or retained conversation (LRU);
* ``detok``: incremental detokenisation;
* ``scheduler``: the step thread (admission, chunked prefill, batched decode);
* ``engine``: ``GpuEngine``, the Engine protocol adapter.

Importing this package imports nothing heavy; ``rtserver.engines.gpu.engine`` needs torch.
"""
