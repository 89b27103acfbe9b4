"""Fine-tuning with TorchDistributor: the driver's plan and the per-rank loop."""
