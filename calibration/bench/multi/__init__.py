"""Multi-GPU measurements (issue 16): collectives, tensor-parallel forwards, DDP/FSDP/pipeline training."""
