"""Model backends: the standalone diffusers pipelines (``loaders``, ``pipeline``, ``tiny``,
``random_models``) and what both hosts share (``clipseg``, ``hub``, ``tokenizer``). Nothing is
imported here, so the WebUI adapter loads only the shared modules it uses."""
