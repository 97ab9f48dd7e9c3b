"""A stand-in of the AUTOMATIC1111 WebUI v1.10.1 ``modules`` package: only what mrgd touches,
with the real signatures and behaviours (row layout of the CFG denoiser, hook error handling,
interrupts), driven by the tiny model. See HOST_API.md for the originals."""
